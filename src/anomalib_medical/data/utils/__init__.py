"""Helpers shared by the datamodules: downloads, safe extraction, image discovery and validation, sample tables."""

from anomalib_medical.data.utils.download import (
    ArchiveError,
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    download_file,
    extract_archive_atomically,
    safe_extract,
    sha256sum,
    staging_directory,
    verify_sha256,
)
from anomalib_medical.data.utils.images import (
    IMAGE_EXTENSIONS,
    InvalidImageError,
    check_image_file,
    check_images,
    is_os_metadata,
    list_images,
    make_samples_dataframe,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ArchiveError",
    "ChecksumError",
    "DownloadError",
    "InvalidImageError",
    "UnsafeArchiveError",
    "check_image_file",
    "check_images",
    "download_file",
    "extract_archive_atomically",
    "is_os_metadata",
    "list_images",
    "make_samples_dataframe",
    "safe_extract",
    "sha256sum",
    "staging_directory",
    "verify_sha256",
]
