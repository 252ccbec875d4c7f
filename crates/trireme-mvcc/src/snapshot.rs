//! Snapshots: a consistent image of the whole store (data and [`AppliedState`]) as a
//! stream of framed records with a crc32 trailer, and rebuilding a store from one.
//!
//! Format (integers big-endian):
//! ```text
//! MAGIC
//! { 0x01, key_len u32, key, value_len u32, value }*   every record of the tree, in key order
//! 0x00, record_count u64, crc32 u32                     crc of every byte before it
//! ```
//!
//! The cluster records (`c` prefix, the member table) are records of the tree like
//! any other, so they travel in the image. Images written before cluster records
//! existed simply have none; the format did not change.

use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::Path;

use crate::error::{SnapshotError, StorageError};
use crate::store::{Store, TREE};
use crate::types::SnapshotInfo;

const MAGIC: &[u8; 16] = b"TRIREME-MVCC-S1\n";
const TAG_RECORD: u8 = 1;
const TAG_END: u8 = 0;
/// Largest key or value a snapshot may carry; a bigger length is corruption.
const MAX_FIELD: u32 = 64 << 20;
/// Records are written to the new store in sled batches of about this many bytes.
const RESTORE_BATCH_BYTES: usize = 4 << 20;

struct CrcWriter<'w> {
    inner: BufWriter<&'w mut dyn Write>,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl CrcWriter<'_> {
    fn put(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.crc.update(data);
        self.bytes += data.len() as u64;
        self.inner.write_all(data)
    }
}

struct CrcReader<'r> {
    inner: BufReader<&'r mut dyn Read>,
    crc: crc32fast::Hasher,
}

impl CrcReader<'_> {
    fn read_array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf).map_err(read_error)?;
        self.crc.update(&buf);
        Ok(buf)
    }

    /// Reads `len` bytes, growing the buffer as data arrives (a corrupt length on a
    /// short stream does not allocate it all).
    fn read_field(&mut self) -> Result<Vec<u8>, SnapshotError> {
        let len = u32::from_be_bytes(self.read_array()?);
        if len > MAX_FIELD {
            return Err(SnapshotError::Malformed(format!("field of {len} bytes")));
        }
        let mut buf = Vec::new();
        (&mut self.inner)
            .take(u64::from(len))
            .read_to_end(&mut buf)
            .map_err(read_error)?;
        if buf.len() != len as usize {
            return Err(SnapshotError::Truncated);
        }
        self.crc.update(&buf);
        Ok(buf)
    }
}

fn read_error(e: std::io::Error) -> SnapshotError {
    if e.kind() == ErrorKind::UnexpectedEof {
        SnapshotError::Truncated
    } else {
        SnapshotError::Io(e)
    }
}

impl Store {
    /// Streams a consistent point-in-time image of the whole store to `w`, holding the
    /// read lock (applies wait) while writing. Returns what it captured.
    pub fn write_snapshot(&self, w: &mut dyn Write) -> Result<SnapshotInfo, StorageError> {
        let state = self.read_state();
        let mut out = CrcWriter {
            inner: BufWriter::with_capacity(64 << 10, w),
            crc: crc32fast::Hasher::new(),
            bytes: 0,
        };
        out.put(MAGIC)?;
        let mut records = 0u64;
        for item in self.tree.iter() {
            let (k, v) = item?;
            out.put(&[TAG_RECORD])?;
            out.put(&(k.len() as u32).to_be_bytes())?;
            out.put(&k)?;
            out.put(&(v.len() as u32).to_be_bytes())?;
            out.put(&v)?;
            records += 1;
        }
        out.put(&[TAG_END])?;
        out.put(&records.to_be_bytes())?;
        let crc = out.crc.clone().finalize();
        out.inner.write_all(&crc.to_be_bytes())?;
        out.inner.flush()?;
        Ok(SnapshotInfo {
            applied: state.state.applied.clone(),
            bytes: out.bytes + 4,
            records,
        })
    }

    /// Builds a NEW store in `dir` (which must not exist or be empty) from a snapshot
    /// stream, reading it in bounded chunks and verifying its checksum. On any error it
    /// removes what it wrote. The new store is synced before it is returned.
    pub fn restore(dir: &Path, r: &mut dyn Read) -> Result<Store, SnapshotError> {
        let created = prepare_dir(dir)?;
        match restore_into(dir, r) {
            Ok(store) => Ok(store),
            Err(e) => {
                if let Err(cleanup) = clean_dir(dir, created) {
                    tracing::warn!(dir = %dir.display(), error = %cleanup, "removing a failed snapshot restore");
                }
                Err(e)
            }
        }
    }
}

/// Checks `dir` is absent or empty, creating it; returns whether it was created.
fn prepare_dir(dir: &Path) -> Result<bool, SnapshotError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(SnapshotError::DirNotEmpty(dir.to_path_buf()));
            }
            Ok(false)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(SnapshotError::Io)?;
            Ok(true)
        }
        Err(e) => Err(SnapshotError::Io(e)),
    }
}

fn clean_dir(dir: &Path, created: bool) -> std::io::Result<()> {
    if created {
        return std::fs::remove_dir_all(dir);
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(path)?;
        } else {
            std::fs::remove_file(path)?;
        }
    }
    Ok(())
}

fn restore_into(dir: &Path, r: &mut dyn Read) -> Result<Store, SnapshotError> {
    let db = sled::Config::new()
        .path(dir)
        .open()
        .map_err(StorageError::from)?;
    let tree = db.open_tree(TREE).map_err(StorageError::from)?;
    let mut input = CrcReader {
        inner: BufReader::with_capacity(64 << 10, r),
        crc: crc32fast::Hasher::new(),
    };
    if &input.read_array::<16>()? != MAGIC {
        return Err(SnapshotError::Malformed(
            "not a trireme-mvcc snapshot".into(),
        ));
    }
    let mut batch = sled::Batch::default();
    let mut batch_bytes = 0usize;
    let mut records = 0u64;
    let mut last_key: Option<Vec<u8>> = None;
    loop {
        match input.read_array::<1>()?[0] {
            TAG_RECORD => {}
            TAG_END => break,
            tag => return Err(SnapshotError::Malformed(format!("record tag {tag}"))),
        }
        let key = input.read_field()?;
        let value = input.read_field()?;
        if last_key.as_ref().is_some_and(|last| *last >= key) {
            return Err(SnapshotError::Malformed("records out of order".into()));
        }
        batch_bytes += key.len() + value.len();
        batch.insert(key.as_slice(), value);
        last_key = Some(key);
        records += 1;
        if batch_bytes >= RESTORE_BATCH_BYTES {
            tree.apply_batch(std::mem::take(&mut batch))
                .map_err(StorageError::from)?;
            batch_bytes = 0;
        }
    }
    let count = u64::from_be_bytes(input.read_array()?);
    let actual = input.crc.clone().finalize();
    let mut expected = [0u8; 4];
    input.inner.read_exact(&mut expected).map_err(read_error)?;
    let expected = u32::from_be_bytes(expected);
    if expected != actual {
        return Err(SnapshotError::Checksum { expected, actual });
    }
    if count != records {
        return Err(SnapshotError::Malformed(format!(
            "trailer says {count} records, stream has {records}"
        )));
    }
    tree.apply_batch(batch).map_err(StorageError::from)?;
    drop(tree);
    let store = Store::from_db(dir, db)?;
    if let Err(e) = store.sync() {
        // sled's destructor syncs its file once more and panics when that fails too
        // (an `unwrap` in sled's `Log::drop`), which a failing disk makes certain: leave
        // the store open instead. The node stops on this error and its process exits.
        std::mem::forget(store);
        return Err(e.into());
    }
    Ok(store)
}
