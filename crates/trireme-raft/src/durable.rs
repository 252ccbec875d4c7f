//! Making sled really durable.
//!
//! sled 0.34's `flush()` writes its log with `sync_file_range`, which flushes neither
//! the disk's volatile cache nor file metadata (sled issue 1452), and large items
//! (over about 128 KiB) go to blob files that sled never fsyncs. [`DurableSled`]
//! follows every `flush()` with `sync_data()` on sled's data file and `sync_all()` on
//! every blob file it has not synced yet, plus the blob directory. An error here is
//! fail-stop: the caller must stop the node, never retry and carry on.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// A sled database opened together with handles to fsync what `flush()` leaves in
/// the page cache.
pub struct DurableSled {
    /// The database.
    pub db: sled::Db,
    /// sled's one data file (`<dir>/db`), opened read-only for `sync_data`.
    data_file: File,
    /// `<dir>/blobs`: one file per large item.
    blob_dir: PathBuf,
    /// Blob files already fsynced; blobs are written once and never rewritten.
    synced_blobs: HashSet<std::ffi::OsString>,
}

impl DurableSled {
    /// Opens (or creates) the sled database in `dir` and syncs what a previous
    /// process may have left unsynced.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let db = sled::Config::new().path(dir).open().map_err(sled_to_io)?;
        let data_file = File::open(dir.join("db"))?;
        let mut this = DurableSled {
            db,
            data_file,
            blob_dir: dir.join("blobs"),
            synced_blobs: HashSet::new(),
        };
        this.sync()?;
        Ok(this)
    }

    /// Flushes sled and fsyncs its data file and any new blob file. One call per
    /// batch of writes: this is the fsync that group commit amortises.
    pub fn sync(&mut self) -> io::Result<()> {
        self.db.flush().map_err(sled_to_io)?;
        self.data_file.sync_data()?;
        let mut new_blob = false;
        match std::fs::read_dir(&self.blob_dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry?;
                    let name = entry.file_name();
                    if self.synced_blobs.contains(&name) {
                        continue;
                    }
                    match File::open(entry.path()) {
                        Ok(f) => f.sync_all()?,
                        // sled garbage-collected it between the listing and the open.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    }
                    self.synced_blobs.insert(name);
                    new_blob = true;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if new_blob {
            File::open(&self.blob_dir)?.sync_all()?;
            // Forget names sled has removed so the set stays bounded.
            let blob_dir = &self.blob_dir;
            self.synced_blobs.retain(|n| blob_dir.join(n).exists());
        }
        Ok(())
    }
}

/// sled's error as an `io::Error`, keeping the io kind when there is one.
pub fn sled_to_io(e: sled::Error) -> io::Error {
    match e {
        sled::Error::Io(io) => io,
        other => io::Error::other(other.to_string()),
    }
}

/// Writes `bytes` to `path` durably: a temporary file, fsync, rename, fsync the
/// directory. A crash leaves either the old file or the new one.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent directory"))?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Fsyncs a directory so that renames and creations in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
