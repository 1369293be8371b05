//! Files and directories that hold what only the gateway may read (the pseudonym map, the audit
//! trail, the directory of where studies live, the cache, the secret): created for the owner
//! alone, whatever the umask (directories 0700, files 0600).

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

const DIRECTORY_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// Creates a directory and its missing parents, each new one 0700 (existing ones are left as
/// they are: an administrator may have chosen them).
pub(crate) fn create_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIRECTORY_MODE).create(dir)
}

/// Options that create a file 0600 (an existing file keeps its mode).
pub(crate) fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Makes a file that a library created (an embedded database) 0600.
pub(crate) fn restrict(path: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE))
}

/// Opens (or creates) the embedded database `file` in the state directory `dir` (named
/// `dir_key` in errors), the directory and the file for the owner alone; a database another
/// process holds is one clear error.
pub(crate) fn open_database(dir: &Path, dir_key: &str, file: &str) -> anyhow::Result<redb::Database> {
    create_dir(dir).map_err(|e| anyhow::anyhow!("cannot create {dir_key} {}: {e}", dir.display()))?;
    let path = dir.join(file);
    let store = redb::Database::create(&path).map_err(|e| {
        anyhow::anyhow!("cannot open {} (is another gateway using this {dir_key}?): {e}", path.display())
    })?;
    restrict(&path)?;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_created_is_the_owners_alone() {
        let root = std::env::temp_dir().join(format!("private-files-{}", std::process::id()));
        let dir = root.join("a/b");
        create_dir(&dir).expect("created");
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.join("a")), 0o700);
        let file = dir.join("f");
        options().write(true).create(true).truncate(true).open(&file).expect("opened");
        assert_eq!(mode(&file), 0o600);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        restrict(&file).expect("restricted");
        assert_eq!(mode(&file), 0o600);
        std::fs::remove_dir_all(&root).expect("removed");
    }
}
