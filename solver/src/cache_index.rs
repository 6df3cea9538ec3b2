//! The persistent cache index: cache key -> result, and the stat memo for context files.
//!
//! It lives in one SQLite database in the store (`cache.db`), in WAL mode. SQLite was
//! chosen over redb or fjall because two kiln processes may build into one store at the
//! same time: SQLite coordinates readers and a writer across processes, while redb and
//! fjall lock the file to a single process. A transaction is atomic, so a build killed at
//! any point leaves the index as it was before or after a write, never in between.
//!
//! The index only ever points at results that are already durable: callers commit a
//! snapshot first and record it here second, so a crash between the two loses a cache
//! entry, never a result.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use crate::cache_key::{CacheKey, KeyPart};

/// An error reading or writing the index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The database could not be opened, read or written.
    #[error("cache index {path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored record could not be decoded; the entry is ignored by readers.
    #[error("cache index {path}: a damaged record for key {key}: {reason}")]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// The key whose record is damaged.
        key: String,
        /// What was wrong with it.
        reason: String,
    },
}

impl IndexError {
    /// Whether SQLite could not write because the disk (or a quota) is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self,
            IndexError::Database { source, .. }
                if source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
        )
    }
}

/// What the index remembers about one cached result.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheRecord {
    /// The result, as the caller encoded it (e.g. a snapshot id and image config).
    pub value: Vec<u8>,
    /// The parts the key was made of, for `--explain`.
    pub parts: Vec<KeyPart>,
}

/// A file's identity as `stat` shows it; unchanged identity means unchanged content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the epoch (changes with mode and owner too).
    pub ctime_ns: i64,
}

/// The open index. Cheap calls, safe to share between threads.
pub struct CacheIndex {
    path: PathBuf,
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS results (
    key       TEXT PRIMARY KEY,
    value     BLOB NOT NULL,
    parts     TEXT NOT NULL,
    created   INTEGER NOT NULL,
    last_used INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS last_parts (
    name  TEXT PRIMARY KEY,
    parts TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS stat_memo (
    dev      INTEGER NOT NULL,
    ino      INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    digest   BLOB NOT NULL,
    PRIMARY KEY (dev, ino)
);
";

impl CacheIndex {
    /// Opens (creating if needed) the index at `path`.
    pub fn open(path: &Path) -> Result<CacheIndex, IndexError> {
        let db_err = |source| IndexError::Database {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(db_err)?;
        // Another kiln process may hold the write lock for a moment; wait rather than fail.
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_err)?;
        // SQLite does not call the busy handler everywhere a first open can collide with
        // another: switching a fresh database to WAL needs it alone, and a statement that
        // read the schema and then must write gives up at once if another connection
        // wrote first (a deadlock SQLite refuses to wait out). Builds started together on
        // a fresh store hit both; so the set-up is retried as a whole, within the same
        // time every other query waits.
        let deadline = Instant::now() + BUSY_TIMEOUT;
        let mut pause = Duration::from_millis(1);
        loop {
            match set_up(&conn) {
                Ok(()) => break,
                Err(e) if is_busy(&e) && Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(db_err(e)),
            }
        }
        Ok(CacheIndex {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    fn db_err(&self, source: rusqlite::Error) -> IndexError {
        IndexError::Database {
            path: self.path.clone(),
            source,
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave the connection half-changed
        // (SQLite rolls back an unfinished transaction), so a poisoned lock is usable.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The record for `key`, and marks it used now (for pruning by age).
    pub fn get(&self, key: &CacheKey) -> Result<Option<CacheRecord>, IndexError> {
        let conn = self.conn();
        let row: Option<(Vec<u8>, String)> = conn
            .query_row(
                "SELECT value, parts FROM results WHERE key = ?1",
                params![key.to_hex()],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(|e| self.db_err(e))?;
        let Some((value, parts)) = row else {
            return Ok(None);
        };
        conn.execute(
            "UPDATE results SET last_used = ?2 WHERE key = ?1",
            params![key.to_hex(), now_secs()],
        )
        .map_err(|e| self.db_err(e))?;
        let parts = serde_json::from_str(&parts).map_err(|e| IndexError::Damaged {
            path: self.path.clone(),
            key: key.to_hex(),
            reason: e.to_string(),
        })?;
        Ok(Some(CacheRecord { value, parts }))
    }

    /// Records `key` -> `record`, replacing an older record for the same key.
    pub fn put(&self, key: &CacheKey, record: &CacheRecord) -> Result<(), IndexError> {
        let parts = serde_json::to_string(&record.parts).unwrap_or_else(|_| "[]".to_owned());
        let now = now_secs();
        self.conn()
            .execute(
                "INSERT INTO results (key, value, parts, created, last_used)
                 VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT(key) DO UPDATE SET value = ?2, parts = ?3, last_used = ?4",
                params![key.to_hex(), record.value, parts, now],
            )
            .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// Forgets `key`.
    pub fn remove(&self, key: &CacheKey) -> Result<(), IndexError> {
        let conn = self.conn();
        conn.execute("DELETE FROM results WHERE key = ?1", params![key.to_hex()])
            .map_err(|e| self.db_err(e))?;
        conn.execute(
            "DELETE FROM last_parts WHERE name = ?1",
            params![format!("note:{}", facts_note(key))],
        )
        .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// What `--explain` keeps of a key: the facts of the step run that made it (JSON),
    /// kept beside its record so that a cache hit never reads them, and removed with it.
    pub fn facts(&self, key: &CacheKey) -> Result<Option<String>, IndexError> {
        self.note(&facts_note(key))
    }

    /// Keeps a key's facts (see [`CacheIndex::facts`]).
    pub fn set_facts(&self, key: &CacheKey, text: &str) -> Result<(), IndexError> {
        self.set_note(&facts_note(key), text)
    }

    /// Every record's key and value, for pruning (which needs to know what is referenced).
    pub fn entries(&self) -> Result<Vec<(CacheKey, Vec<u8>)>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT key, value FROM results")
            .map_err(|e| self.db_err(e))?;
        let rows = stmt
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get(1)?)))
            .map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (key, value) = row.map_err(|e| self.db_err(e))?;
            if let Some(key) = CacheKey::from_hex(&key) {
                out.push((key, value));
            }
        }
        Ok(out)
    }

    /// The key parts last recorded under a step's stable name (e.g. `stage/step`), so the
    /// next build can explain what changed for that step.
    pub fn last_parts(&self, name: &str) -> Result<Option<Vec<KeyPart>>, IndexError> {
        let parts: Option<String> = self
            .conn()
            .query_row(
                "SELECT parts FROM last_parts WHERE name = ?1",
                params![name],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.db_err(e))?;
        Ok(parts.and_then(|p| serde_json::from_str(&p).ok()))
    }

    /// Records the key parts of a step's latest build under its stable name.
    pub fn set_last_parts(&self, name: &str, parts: &[KeyPart]) -> Result<(), IndexError> {
        let parts = serde_json::to_string(parts).unwrap_or_else(|_| "[]".to_owned());
        self.conn()
            .execute(
                "INSERT INTO last_parts (name, parts) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET parts = ?2",
                params![name, parts],
            )
            .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// A note kept under `name` beside the last parts (`--explain`'s record of the last
    /// build of a target): any text, replaced by the next [`CacheIndex::set_note`].
    pub fn note(&self, name: &str) -> Result<Option<String>, IndexError> {
        self.conn()
            .query_row(
                "SELECT parts FROM last_parts WHERE name = ?1",
                params![format!("note:{name}")],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.db_err(e))
    }

    /// Keeps `text` under `name` (see [`CacheIndex::note`]).
    pub fn set_note(&self, name: &str, text: &str) -> Result<(), IndexError> {
        self.conn()
            .execute(
                "INSERT INTO last_parts (name, parts) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET parts = ?2",
                params![format!("note:{name}"), text],
            )
            .map_err(|e| self.db_err(e))?;
        Ok(())
    }

    /// The remembered content digest of a file whose stamp is unchanged.
    pub fn memo_get(&self, stamp: &FileStamp) -> Result<Option<[u8; 32]>, IndexError> {
        let digest: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT digest FROM stat_memo WHERE dev = ?1 AND ino = ?2 AND size = ?3
                 AND mtime_ns = ?4 AND ctime_ns = ?5",
                params![
                    stamp.dev as i64,
                    stamp.ino as i64,
                    stamp.size as i64,
                    stamp.mtime_ns,
                    stamp.ctime_ns
                ],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.db_err(e))?;
        Ok(digest.and_then(|d| <[u8; 32]>::try_from(d.as_slice()).ok()))
    }

    /// Every remembered (stamp, digest) pair, read in one query.
    pub fn memo_all(&self) -> Result<Vec<(FileStamp, [u8; 32])>, IndexError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT dev, ino, size, mtime_ns, ctime_ns, digest FROM stat_memo")
            .map_err(|e| self.db_err(e))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    FileStamp {
                        dev: row.get::<_, i64>(0)? as u64,
                        ino: row.get::<_, i64>(1)? as u64,
                        size: row.get::<_, i64>(2)? as u64,
                        mtime_ns: row.get(3)?,
                        ctime_ns: row.get(4)?,
                    },
                    row.get::<_, Vec<u8>>(5)?,
                ))
            })
            .map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (stamp, digest) = row.map_err(|e| self.db_err(e))?;
            if let Ok(digest) = <[u8; 32]>::try_from(digest.as_slice()) {
                out.push((stamp, digest));
            }
        }
        Ok(out)
    }

    /// Remembers many (stamp, digest) pairs in one transaction.
    pub fn memo_put_all(&self, entries: &[(FileStamp, [u8; 32])]) -> Result<(), IndexError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.db_err(e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO stat_memo (dev, ino, size, mtime_ns, ctime_ns, digest)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT(dev, ino) DO UPDATE SET size = ?3, mtime_ns = ?4,
                     ctime_ns = ?5, digest = ?6",
                )
                .map_err(|e| self.db_err(e))?;
            for (stamp, digest) in entries {
                stmt.execute(params![
                    stamp.dev as i64,
                    stamp.ino as i64,
                    stamp.size as i64,
                    stamp.mtime_ns,
                    stamp.ctime_ns,
                    &digest[..]
                ])
                .map_err(|e| self.db_err(e))?;
            }
        }
        tx.commit().map_err(|e| self.db_err(e))
    }
}

/// How long any use of the index waits for another connection's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// WAL mode and the tables. The schema is written in one `BEGIN IMMEDIATE` transaction,
/// which takes the write lock first (waiting for it) instead of upgrading a read.
fn set_up(conn: &Connection) -> Result<(), rusqlite::Error> {
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Another connection was in a transaction: the switch did not happen yet.
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                Some(format!("journal mode is {mode}, not wal")),
            ));
        }
    }
    conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;"))
        .inspect_err(|_| {
            let _ = conn.execute_batch("ROLLBACK");
        })
}

/// Whether SQLite gave up because another connection held a lock.
fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The note a key's facts are kept under.
fn facts_note(key: &CacheKey) -> String {
    format!("facts:{}", key.to_hex())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache_key::KeyBuilder;

    fn key(text: &str) -> CacheKey {
        let mut b = KeyBuilder::new("t");
        b.part("x", text.as_bytes());
        b.finish().0
    }

    #[test]
    fn results_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cache.db");
        let record = CacheRecord {
            value: b"snapshot-1".to_vec(),
            parts: KeyBuilder::new("t").finish().1,
        };
        {
            let index = CacheIndex::open(&path).expect("open");
            assert_eq!(index.get(&key("a")).expect("get"), None);
            index.put(&key("a"), &record).expect("put");
        }
        let index = CacheIndex::open(&path).expect("reopen");
        assert_eq!(index.get(&key("a")).expect("get"), Some(record));
        assert_eq!(index.entries().expect("entries").len(), 1);
        index.remove(&key("a")).expect("remove");
        assert_eq!(index.get(&key("a")).expect("get"), None);
    }

    #[test]
    fn two_handles_share_one_database() {
        // As two kiln processes would: separate connections, interleaved writes.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cache.db");
        let a = CacheIndex::open(&path).expect("open a");
        let b = CacheIndex::open(&path).expect("open b");
        let record = CacheRecord {
            value: vec![1],
            parts: vec![],
        };
        a.put(&key("1"), &record).expect("put a");
        b.put(&key("2"), &record).expect("put b");
        assert!(b.get(&key("1")).expect("get").is_some());
        assert!(a.get(&key("2")).expect("get").is_some());
    }

    #[test]
    fn memo_needs_an_identical_stamp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = CacheIndex::open(&dir.path().join("cache.db")).expect("open");
        let stamp = FileStamp {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: 4,
            ctime_ns: 5,
        };
        index.memo_put_all(&[(stamp, [7; 32])]).expect("put");
        assert_eq!(index.memo_get(&stamp).expect("get"), Some([7; 32]));
        let touched = FileStamp {
            mtime_ns: 6,
            ..stamp
        };
        assert_eq!(index.memo_get(&touched).expect("get"), None);
    }

    #[test]
    fn last_parts_explain_the_next_build() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = CacheIndex::open(&dir.path().join("cache.db")).expect("open");
        let mut b = KeyBuilder::new("exec");
        b.part("argv", b"make");
        let (_, parts) = b.finish();
        index.set_last_parts("build/3", &parts).expect("set");
        assert_eq!(index.last_parts("build/3").expect("get"), Some(parts));
        assert_eq!(index.last_parts("build/4").expect("get"), None);
    }

    #[test]
    fn many_first_opens_at_once_all_succeed() {
        // Builds that start together right after `kiln prune --all` removed the index all
        // create it at once: schema creation and the switch to WAL race, and each open
        // must wait its turn (issue 19 (a)), never fail with "database is locked".
        const OPENERS: usize = 16;
        for round in 0..40 {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("cache.db");
            let start = std::sync::Arc::new(std::sync::Barrier::new(OPENERS));
            let handles: Vec<_> = (0..OPENERS)
                .map(|i| {
                    let (path, start) = (path.clone(), std::sync::Arc::clone(&start));
                    std::thread::spawn(move || {
                        start.wait();
                        let index = CacheIndex::open(&path)?;
                        let record = CacheRecord {
                            value: vec![i as u8],
                            parts: vec![],
                        };
                        index.put(&key(&i.to_string()), &record)
                    })
                })
                .collect();
            for handle in handles {
                let opened = handle.join().expect("an opener panicked");
                assert!(opened.is_ok(), "round {round}: {:?}", opened.err());
            }
            let index = CacheIndex::open(&path).expect("open");
            assert_eq!(index.entries().expect("entries").len(), OPENERS);
        }
    }
}
