# The gitlab-dr host image: Debian 12 with the Docker engine and Compose, the pinned GitLab
# image already pulled, the gitlab-rsync sidecar already built, a mount point waiting for the
# EBS data volume, and GitLab not started. `inv build-ami` runs this template: it passes the
# variables that come from the settings (.env) and, if present, packer/gitlab.pkrvars.hcl.
# Every variable is documented in gitlab.pkrvars.hcl.example.

packer {
  required_version = ">= 1.7.0"
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.2.1, < 2.0.0"
    }
  }
}

# --- Given by inv build-ami from the settings: no defaults here, on purpose -----------------

variable "region" {
  type        = string
  description = "AWS region the AMI is built in (AWS_REGION)."
  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "The region must be an AWS region like eu-west-1."
  }
}

variable "gitlab_image" {
  type        = string
  description = "GitLab image pre-pulled into the AMI, pinned to a tag or digest (GITLAB_IMAGE)."
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._/:-]*(@sha256:[0-9a-f]{64})?$", var.gitlab_image)) && can(regex("[:@][^/]*$", var.gitlab_image)) && length(regexall(":latest$", var.gitlab_image)) == 0
    error_message = "The gitlab_image must be pinned to a tag or digest (not :latest), like gitlab/gitlab-ce:17.8.1-ce.0."
  }
}

variable "project_name" {
  type        = string
  description = "Value of the Project tag on the AMI, its snapshot and the build instance (PROJECT_NAME)."
  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", var.project_name))
    error_message = "The project_name must be letters, digits, dots, dashes or underscores."
  }
}

variable "base_image" {
  type        = string
  description = "Base image the gitlab-rsync sidecar is built on, pulled on the build instance (BASE_IMAGE)."
}

variable "sync_image" {
  type        = string
  description = "Tag given to the gitlab-rsync sidecar image built into the AMI (SYNC_IMAGE)."
}

variable "docker_user" {
  type        = string
  description = "User added to the docker group, the one ops reaches the engine as over SSH (SSH_USER)."
  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.docker_user))
    error_message = "The docker_user must be a Unix user name."
  }
}

variable "data_mount_point" {
  type        = string
  description = "Where the EBS data volume is mounted: the folder holding GITLAB_HOME and SYNC_HOME."
  validation {
    condition     = can(regex("^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$", var.data_mount_point))
    error_message = "The data_mount_point must be an absolute path other than /."
  }
}

# --- Tunables: defaults that work in a default VPC; override them in gitlab.pkrvars.hcl -----

variable "instance_type" {
  type        = string
  description = "EC2 instance type of the temporary build instance (not of the GitLab hosts)."
  default     = "t3.large"
}

variable "ami_name_prefix" {
  type        = string
  description = "Start of the AMI name; the GitLab image and a UTC timestamp follow."
  default     = "gitlab-dr"
  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]{2,39}$", var.ami_name_prefix))
    error_message = "The ami_name_prefix must be 3 to 40 letters, digits, dots, dashes or underscores."
  }
}

variable "source_ami_owner" {
  type        = string
  description = "Account that publishes the source AMI (136693071363: Debian's official images)."
  default     = "136693071363"
  validation {
    condition     = can(regex("^[0-9]{12}$", var.source_ami_owner))
    error_message = "The source_ami_owner must be a 12-digit AWS account id."
  }
}

variable "source_ami_name" {
  type        = string
  description = "Name filter of the source AMI; the most recent match is used."
  default     = "debian-12-amd64-*"
}

variable "ssh_username" {
  type        = string
  description = "User Packer connects as on the source AMI (Debian's images: admin)."
  default     = "admin"
}

variable "ssh_source_cidrs" {
  type        = list(string)
  description = "Who may reach the build instance's SSH; empty: only the public address Packer runs from."
  default     = []
}

variable "root_volume_gb" {
  type        = number
  description = "Size of the AMI's root volume in GB (the GitLab image alone is about 3 GB)."
  default     = 30
  validation {
    condition     = var.root_volume_gb >= 16 && var.root_volume_gb <= 1024
    error_message = "The root_volume_gb must be between 16 and 1024."
  }
}

variable "kms_key_id" {
  type        = string
  description = "KMS key (id, ARN or alias/...) encrypting the root volume, so the AMI's snapshot; inv build-ami sets it from KMS_KEY_ID when that is set. Empty: the account's default EBS key."
  default     = ""
}

variable "vpc_id" {
  type        = string
  description = "VPC of the build instance; empty: the default VPC."
  default     = ""
}

variable "subnet_id" {
  type        = string
  description = "Subnet of the build instance; empty: one chosen by AWS in the VPC. It needs a route to the internet."
  default     = ""
}

variable "associate_public_ip_address" {
  type        = bool
  description = "Give the build instance a public address (null: the subnet's own setting)."
  default     = null
}

variable "data_volume_label" {
  type        = string
  description = "Filesystem label of the EBS data volume; a blank volume is formatted btrfs with it on first boot."
  default     = "gitlab-data"
  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,16}$", var.data_volume_label))
    error_message = "The data_volume_label must be 1 to 16 letters, digits, dashes or underscores (a label ext4 takes too)."
  }
}

variable "data_subvolumes" {
  type        = list(string)
  description = "The btrfs subvolumes made at the top of the data volume: the folder names of GITLAB_HOME and SYNC_HOME under data_mount_point."
  validation {
    condition     = length(var.data_subvolumes) > 0 && alltrue([for name in var.data_subvolumes : can(regex("^[A-Za-z0-9_][A-Za-z0-9._-]*$", name))])
    error_message = "The data_subvolumes must be folder names: letters, digits, dots, dashes or underscores."
  }
}

variable "inotify_max_user_watches" {
  type        = number
  description = "fs.inotify.max_user_watches on the hosts: the master's sidecar watches every folder of GitLab's data."
  default     = 1048576
  validation {
    condition     = var.inotify_max_user_watches >= 8192
    error_message = "The inotify_max_user_watches must be at least 8192."
  }
}

locals {
  stamp      = formatdate("YYYYMMDD'T'hhmmssZ", timestamp())
  image_slug = regex_replace(var.gitlab_image, "[^A-Za-z0-9.-]+", "-")
  ami_name   = substr("${var.ami_name_prefix}-${local.image_slug}-${local.stamp}", 0, 128)
  staging    = "/tmp/gitlab-dr"
  tags = {
    Project     = var.project_name
    Name        = local.ami_name
    GitLabImage = var.gitlab_image
    SyncImage   = var.sync_image
  }
}

source "amazon-ebs" "gitlab" {
  region          = var.region
  instance_type   = var.instance_type
  ami_name        = local.ami_name
  ami_description = "gitlab-dr host: Docker, Compose, ${var.gitlab_image} pulled, GitLab not started"

  source_ami_filter {
    filters = {
      name                = var.source_ami_name
      architecture        = "x86_64"
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    owners      = [var.source_ami_owner]
    most_recent = true
  }

  vpc_id                      = var.vpc_id != "" ? var.vpc_id : null
  subnet_id                   = var.subnet_id != "" ? var.subnet_id : null
  associate_public_ip_address = var.associate_public_ip_address

  ssh_username = var.ssh_username
  ssh_timeout  = "10m"
  # SSH to the build instance only from ssh_source_cidrs or, when empty, from the public
  # address Packer runs from (the plugin uses the second only when the first is empty).
  temporary_security_group_source_cidrs     = var.ssh_source_cidrs
  temporary_security_group_source_public_ip = true

  # IMDSv2 only, on the build instance and (imds_support) on every instance launched from the AMI.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  imds_support = "v2.0"

  # The root volume is encrypted from the start, so the AMI's snapshot is too, without the
  # extra copy that encrypt_boot would make.
  launch_block_device_mappings {
    device_name           = "/dev/xvda"
    volume_size           = var.root_volume_gb
    volume_type           = "gp3"
    encrypted             = true
    kms_key_id            = var.kms_key_id != "" ? var.kms_key_id : null
    delete_on_termination = true
  }

  tags          = local.tags
  snapshot_tags = local.tags
  run_tags      = merge(local.tags, { Name = "${var.project_name}-ami-build" })
}

build {
  name    = "gitlab-dr"
  sources = ["source.amazon-ebs.gitlab"]

  provisioner "shell" {
    inline = ["mkdir -p ${local.staging}/images"]
  }

  # The Compose stack and the gitlab-rsync build context: its Dockerfile and its code (no
  # trailing slash: each lands in a folder of its name under ${local.staging}).
  provisioner "file" {
    source      = "${path.root}/../compose"
    destination = local.staging
  }

  provisioner "file" {
    source      = "${path.root}/../images/gitlab-rsync"
    destination = "${local.staging}/images"
  }

  provisioner "file" {
    source      = "${path.root}/../sidecar"
    destination = local.staging
  }

  # ops/: the gitlab-verify service (the same image) runs ops.dr.verify_schedule.
  provisioner "file" {
    source      = "${path.root}/../ops"
    destination = local.staging
  }

  provisioner "file" {
    source      = "${path.root}/files/prepare-data-volume.sh"
    destination = "${local.staging}/prepare-data-volume.sh"
  }

  provisioner "shell" {
    script          = "${path.root}/provision.sh"
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = [
      "STAGING_DIR=${local.staging}",
      "GITLAB_IMAGE=${var.gitlab_image}",
      "BASE_IMAGE=${var.base_image}",
      "SYNC_IMAGE=${var.sync_image}",
      "DOCKER_USER=${var.docker_user}",
      "DATA_MOUNT=${var.data_mount_point}",
      "DATA_LABEL=${var.data_volume_label}",
      "DATA_SUBVOLUMES=${join(" ", var.data_subvolumes)}",
      "INOTIFY_MAX_USER_WATCHES=${var.inotify_max_user_watches}",
      "PROJECT_NAME=${var.project_name}",
    ]
  }
}
