"""A ``packer`` executable for the build-ami tests: it records its arguments and prints recorded
machine-readable output (tests/fixtures/packer/); nothing reaches AWS."""

from __future__ import annotations

import stat
from pathlib import Path

from ops.aws import ami
from ops.settings import Settings

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "packer"


class FakePacker:
    """A ``packer`` executable: logs its argv, prints ``<command>.out``, exits ``<command>.rc``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = root / "argv.log"
        self.path = root / "bin" / "packer"
        self.path.parent.mkdir(parents=True)
        self.path.write_text(
            "#!/bin/sh\n"
            'printf "%s\\n" "$*" >>"$FAKE_PACKER_LOG"\n'
            "cmd=\n"
            'for a in "$@"; do case $a in version|init|build) cmd=$a; break;; esac; done\n'
            'cat "$FAKE_PACKER_DIR/$cmd.out" 2>/dev/null\n'
            'exit "$(cat "$FAKE_PACKER_DIR/$cmd.rc" 2>/dev/null || echo 0)"\n'
        )
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR)
        self.answer("version", "version_1.11.2.txt")
        self.answer("init", "init_success.txt")
        self.answer("build", "build_success.txt")

    def answer(self, command: str, fixture: str | None = None, rc: int = 0, text: str = "") -> None:
        body = (FIXTURES / fixture).read_text(encoding="utf-8") if fixture else text
        (self.root / f"{command}.out").write_text(body)
        (self.root / f"{command}.rc").write_text(str(rc))

    @property
    def environ(self) -> dict[str, str]:
        return {
            "PATH": "/usr/bin:/bin",
            "FAKE_PACKER_LOG": str(self.log),
            "FAKE_PACKER_DIR": str(self.root),
        }

    def which(self, name: str) -> str | None:
        return str(self.path) if name == "packer" else None

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def build(self, settings: Settings, var_file: Path | None = None) -> tuple[str, list[str]]:
        lines: list[str] = []
        ami_id = ami.build_ami(
            settings, var_file, lines.append, which=self.which, environ=self.environ
        )
        return ami_id, lines
