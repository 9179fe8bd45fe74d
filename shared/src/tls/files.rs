//! Writing identity files: a private directory, and files written whole under a new name, then
//! renamed into place, never through a symlink.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Makes `dir` a directory only its owner can enter (creating it, and its parents, if missing);
/// refuses a symlink or a file in its place.
pub(super) fn private_dir(dir: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} is not a directory (a symlink is not followed)",
                    dir.display()
                ),
            ))
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut builder = std::fs::DirBuilder::new();
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(dir)?;
        }
        Err(error) => return Err(error),
    }
    #[cfg(unix)]
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    Ok(())
}

/// Writes `contents` to a new file beside `path` with `mode` (on Unix), then renames it to
/// `path`. The new file is created exclusively (never through a symlink); the rename replaces
/// whatever `path` was, a symlink included, without touching what it pointed to.
pub(super) fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("file");
    let temporary = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let written = options.open(&temporary).and_then(|mut file| {
        io::Write::write_all(&mut file, contents)?;
        file.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&temporary, path));
    if renamed.is_err() {
        // Best effort: the error that matters is the write's or the rename's.
        let _cleanup = std::fs::remove_file(&temporary);
    }
    renamed
}
