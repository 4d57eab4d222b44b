"""gitlab-dr's module layer: AWS through boto3, each host's Docker engine over ssh://, packer.

Invoke tasks in ``tasks.py`` are thin wrappers around the functions here. Everything in this
package raises :class:`ops.errors.OpsError` (or a subclass) with the cause attached; only the
CLI edge turns those into exit codes and one-line messages.
"""
