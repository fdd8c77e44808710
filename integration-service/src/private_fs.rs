//! Files only this process's user may read: the development secrets and the SQLite database
//! (which holds webhook payloads and ciphertexts) under `./data`.
//!
//! Invariants: folders this module creates are 0700 and files 0600; a development secret is
//! trusted only when its file is owned by the current user and not readable or writable by
//! anyone else — otherwise whoever can write `./data` could plant a key and mint sessions.

use std::{io, path::Path};

/// Creates `dir` and its missing parents with mode 0700 (existing folders are left as they are).
pub(crate) fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Creates an empty `path` with mode 0600 unless it exists (SQLite then uses it as a new
/// database, and gives its WAL and shared-memory files the same mode).
pub(crate) fn create_private_file_if_missing(path: &Path) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Why `path` may not be trusted as a secret, if it may not: another owner, or a mode that
/// lets the group or others read or write it.
pub(crate) fn untrusted_secret_file(path: &Path) -> io::Result<Option<String>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::symlink_metadata(path)?;
        if !metadata.file_type().is_file() {
            return Ok(Some("it is not a regular file".into()));
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if metadata.uid() != me {
            return Ok(Some(format!(
                "it is owned by uid {}, not by the current user (uid {me})",
                metadata.uid()
            )));
        }
        let mode = metadata.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Ok(Some(format!(
                "its mode is {mode:04o}: only 0600 (owner read/write) is trusted"
            )));
        }
        Ok(None)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn created_private_and_open_modes_are_refused() {
        let dir = std::env::temp_dir().join(format!("pfs-{}", uuid::Uuid::new_v4()));
        let nested = dir.join("a/b");
        create_private_dir_all(&nested).unwrap();
        for d in [&dir, &nested] {
            let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        let file = nested.join("db.sqlite");
        create_private_file_if_missing(&file).unwrap();
        create_private_file_if_missing(&file).unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(untrusted_secret_file(&file).unwrap(), None);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(untrusted_secret_file(&file)
            .unwrap()
            .unwrap()
            .contains("0644"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
