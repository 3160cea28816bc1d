//! Named fault points of the segment log, so tests can make each disk operation fail the way a
//! full or failing disk would (`cargo test -p pumpwatch-core --features failpoints`).
//!
//! Every write, reservation (`fallocate`), cut (`ftruncate`), sync (`msync`, `fsync`,
//! `fdatasync`), rename and directory sync of the log calls [`point`] with its name just before
//! the operation. Without the `failpoints` feature a point is an empty inline function: no cost.
//! With it, a test configures a point with the `fail` crate (`fail::cfg(NAME, "return(ENOSPC)")`)
//! and the operation fails with that errno instead of running (`return` alone gives EIO).

/// Every point, for tests that walk them all.
pub const POINTS: &[&str] = &[
    FALLOCATE,
    MSYNC,
    FDATASYNC,
    REWRITE,
    FSYNC,
    FTRUNCATE,
    DIR_FSYNC,
    INDEX_WRITE,
    INDEX_RENAME,
    INDEX_APPEND,
    COMPRESS_WRITE,
    COMPRESS_FSYNC,
    COMPRESS_RENAME,
    COMPRESS_REMOVE,
];

/// `posix_fallocate` of a segment (a new segment, or the active one growing).
pub const FALLOCATE: &str = "log::segment::fallocate";
/// `msync` of a range of the active segment (records, or the header that publishes them).
pub const MSYNC: &str = "log::segment::msync";
/// `fdatasync` of the active segment after it grew.
pub const FDATASYNC: &str = "log::segment::fdatasync";
/// Writing records again (`pwrite`) after a commit of them failed.
pub const REWRITE: &str = "log::segment::rewrite";
/// `fsync` of a segment being sealed or recovered.
pub const FSYNC: &str = "log::segment::fsync";
/// `ftruncate` of a segment being sealed or recovered.
pub const FTRUNCATE: &str = "log::segment::ftruncate";
/// `fsync` of the log directory after files were created, renamed or removed.
pub const DIR_FSYNC: &str = "log::dir_fsync";
/// Writing a whole time index (temporary file).
pub const INDEX_WRITE: &str = "log::index::write";
/// Renaming the temporary index over the index.
pub const INDEX_RENAME: &str = "log::index::rename";
/// Appending an entry to the active segment's index.
pub const INDEX_APPEND: &str = "log::index::append";
/// Writing a compressed segment (temporary file).
pub const COMPRESS_WRITE: &str = "log::compress::write";
/// `fsync` of a compressed segment before its rename.
pub const COMPRESS_FSYNC: &str = "log::compress::fsync";
/// Renaming a compressed segment into place.
pub const COMPRESS_RENAME: &str = "log::compress::rename";
/// Removing the plain copy of a segment once its compressed copy is in place.
pub const COMPRESS_REMOVE: &str = "log::compress::remove";

/// Fails with the configured errno when the point `name` is set to `return(ERRNO)` (`ENOSPC`,
/// `EIO`, `EDQUOT`, `EFBIG`, `EROFS` or a number; EIO when none is given).
#[cfg(feature = "failpoints")]
pub fn point(name: &str) -> std::io::Result<()> {
    fail::fail_point!(name, |arg: Option<String>| Err(std::io::Error::from_raw_os_error(errno(arg.as_deref()))));
    Ok(())
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn point(_name: &str) -> std::io::Result<()> {
    Ok(())
}

#[cfg(feature = "failpoints")]
fn errno(arg: Option<&str>) -> i32 {
    match arg.map(str::trim) {
        Some("ENOSPC") => libc::ENOSPC,
        Some("EDQUOT") => libc::EDQUOT,
        Some("EFBIG") => libc::EFBIG,
        Some("EROFS") => libc::EROFS,
        Some(n) => n.parse().unwrap_or(libc::EIO),
        None => libc::EIO,
    }
}
