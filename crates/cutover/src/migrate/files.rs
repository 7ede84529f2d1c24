//! Migration files on disk: `{version}_{title}.up.sql` / `{version}_{title}.down.sql`.
//!
//! Names are matched like golang-migrate's `^([0-9]+)_(.*)\.(down|up)\.(.*)$`: other files are
//! ignored (a README in the folder is fine), the title is greedy (so `1_a.up.b.up.sql` has the
//! title `a.up.b`), and two files for the same version and direction are an error. Versions are
//! u64 (timestamps like `20240131120000` are fine) and must fit PostgreSQL's bigint.

use super::MigrateError;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One direction of a migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Up,
    Down,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Up => "up",
            Direction::Down => "down",
        })
    }
}

/// One migration file, read at scan time (so what runs is what was checksummed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationFile {
    /// The file name, as shown in messages (`3_add_index.up.sql`).
    pub name: String,
    pub path: PathBuf,
    pub sql: String,
    /// Hex sha256 of the file's bytes.
    pub sha256: String,
}

/// One version: its up and down files (golang-migrate allows either to be missing; a missing
/// file moves the version without running anything).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    pub version: u64,
    pub title: String,
    pub up: Option<MigrationFile>,
    pub down: Option<MigrationFile>,
}

impl Migration {
    /// The file of `direction`, if any.
    pub fn file(&self, direction: Direction) -> Option<&MigrationFile> {
        match direction {
            Direction::Up => self.up.as_ref(),
            Direction::Down => self.down.as_ref(),
        }
    }
}

/// The migrations of one folder, by version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migrations {
    dir: PathBuf,
    by_version: BTreeMap<u64, Migration>,
}

/// The parts of a migration file name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct FileName<'a> {
    pub version_digits: &'a str,
    pub title: &'a str,
    pub direction: Direction,
}

/// Matches golang-migrate's `^([0-9]+)_(.*)\.(down|up)\.(.*)$`; `None` for other names.
pub(crate) fn parse_file_name(name: &str) -> Option<FileName<'_>> {
    let digits_end = name.bytes().take_while(u8::is_ascii_digit).count();
    if digits_end == 0 {
        return None;
    }
    let rest = name[digits_end..].strip_prefix('_')?;
    // `(.*)` is greedy: the title ends at the last `.up.` / `.down.`.
    let up = rest.rfind(".up.").map(|i| (i, Direction::Up));
    let down = rest.rfind(".down.").map(|i| (i, Direction::Down));
    let (at, direction) = match (up, down) {
        (Some(u), Some(d)) => {
            if u.0 > d.0 {
                u
            } else {
                d
            }
        }
        (Some(u), None) => u,
        (None, Some(d)) => d,
        (None, None) => return None,
    };
    Some(FileName {
        version_digits: &name[..digits_end],
        title: &rest[..at],
        direction,
    })
}

impl Migrations {
    /// Reads every migration file of `dir`.
    pub fn scan(dir: &Path) -> Result<Migrations, MigrateError> {
        let read_dir = |source| MigrateError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(read_dir)? {
            let entry = entry.map_err(read_dir)?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if parse_file_name(&name).is_none() {
                continue;
            }
            let file_type = entry.file_type().map_err(read_dir)?;
            // Follow symlinks, as golang-migrate's file source does, but skip directories.
            if file_type.is_dir() || (file_type.is_symlink() && entry.path().is_dir()) {
                continue;
            }
            names.push(name);
        }
        names.sort();

        let mut by_version: BTreeMap<u64, Migration> = BTreeMap::new();
        for name in names {
            let parsed = parse_file_name(&name).expect("filtered above");
            let version: u64 = parsed
                .version_digits
                .parse()
                .ok()
                .filter(|v| i64::try_from(*v).is_ok())
                .ok_or_else(|| MigrateError::BadVersion {
                    file: dir.join(&name),
                })?;
            let path = dir.join(&name);
            let bytes = fs::read(&path).map_err(|source| MigrateError::ReadFile {
                path: path.clone(),
                source,
            })?;
            let sha256 = hex(&Sha256::digest(&bytes));
            let sql = String::from_utf8(bytes).map_err(|_| MigrateError::ReadFile {
                path: path.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, "the file is not UTF-8"),
            })?;
            let file = MigrationFile {
                name: name.clone(),
                path,
                sql,
                sha256,
            };
            let migration = by_version.entry(version).or_insert_with(|| Migration {
                version,
                title: parsed.title.to_string(),
                up: None,
                down: None,
            });
            let slot = match parsed.direction {
                Direction::Up => &mut migration.up,
                Direction::Down => &mut migration.down,
            };
            if let Some(existing) = slot {
                return Err(MigrateError::Duplicate {
                    version,
                    direction: parsed.direction,
                    first: existing.path.clone(),
                    second: file.path,
                });
            }
            *slot = Some(file);
        }
        Ok(Migrations {
            dir: dir.to_path_buf(),
            by_version,
        })
    }

    /// An empty set (a component without migration files).
    pub fn empty(dir: &Path) -> Migrations {
        Migrations {
            dir: dir.to_path_buf(),
            by_version: BTreeMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_empty(&self) -> bool {
        self.by_version.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_version.len()
    }

    /// All migrations, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Migration> {
        self.by_version.values()
    }

    pub fn get(&self, version: u64) -> Option<&Migration> {
        self.by_version.get(&version)
    }

    /// The newest version, if any (compare with the database's to see whether it is ahead).
    pub fn latest(&self) -> Option<u64> {
        self.by_version.keys().next_back().copied()
    }

    /// The newest version older than `version`.
    pub fn previous(&self, version: u64) -> Option<u64> {
        self.by_version
            .range(..version)
            .next_back()
            .map(|(v, _)| *v)
    }

    /// Versions newer than `current` (all of them when `None`), oldest first.
    pub fn after(&self, current: Option<u64>) -> impl Iterator<Item = &Migration> {
        let range = match current {
            Some(v) => self.by_version.range(v.saturating_add(1)..),
            None => self.by_version.range(..),
        };
        range
            .map(|(_, m)| m)
            .filter(move |m| current.is_none_or(|c| m.version > c))
    }

    /// Versions up to and including `current`, oldest first.
    pub fn through(&self, current: Option<u64>) -> impl Iterator<Item = &Migration> {
        let range = match current {
            Some(v) => self.by_version.range(..=v),
            None => self.by_version.range(0..0),
        };
        range.map(|(_, m)| m)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Converts PostgreSQL's error position (1-based, in characters) into a 1-based line and column
/// of `sql`. `None` when the position is outside the text.
pub fn line_column(sql: &str, position: u32) -> Option<(usize, usize)> {
    let position = usize::try_from(position).ok()?;
    if position == 0 {
        return None;
    }
    let (mut line, mut column) = (1, 1);
    let mut chars = sql.chars();
    for _ in 1..position {
        match chars.next()? {
            '\n' => {
                line += 1;
                column = 1;
            }
            _ => column += 1,
        }
    }
    chars.next()?;
    Some((line, column))
}

/// Writes the next `{version}_{name}.up.sql` / `.down.sql` pair into `dir` (created if missing).
///
/// The version follows the existing files: the next sequence number, zero-padded to the width
/// the files use (6 digits in an empty folder, like `migrate create -seq`); or, when the newest
/// version is a timestamp (`YYYYMMDDhhmmss`, or 10-digit Unix seconds), the current UTC time in
/// that format (one more than the newest version if the clock is behind it).
pub fn create(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), MigrateError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(MigrateError::BadName {
            name: name.to_string(),
        });
    }
    let existing = if dir.exists() {
        Migrations::scan(dir)?
    } else {
        Migrations::empty(dir)
    };
    let widths = existing_widths(dir);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let version = next_version(existing.latest(), widths, now);
    fs::create_dir_all(dir).map_err(|source| MigrateError::Create {
        path: dir.to_path_buf(),
        source,
    })?;
    let up = dir.join(format!("{version}_{name}.up.sql"));
    let down = dir.join(format!("{version}_{name}.down.sql"));
    for (path, body) in [
        (&up, format!("-- {name}: applied by `migrate up`.\n")),
        (
            &down,
            format!("-- {name}: reverts the up file; run only by an explicit `migrate down`.\n"),
        ),
    ] {
        let written = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .and_then(|mut f| io::Write::write_all(&mut f, body.as_bytes()));
        if let Err(source) = written {
            if path == &down {
                let _ = fs::remove_file(&up);
            }
            return Err(MigrateError::Create {
                path: path.clone(),
                source,
            });
        }
    }
    Ok((up, down))
}

/// The widths of the version digits of the files in `dir` (for zero padding).
fn existing_widths(dir: &Path) -> Vec<usize> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| parse_file_name(&n).map(|p| p.version_digits.len()))
        .collect()
}

/// The version `create` gives the next migration, as its file-name digits.
pub(crate) fn next_version(latest: Option<u64>, widths: Vec<usize>, now_unix: u64) -> String {
    let Some(latest) = latest else {
        return format!("{:06}", 1);
    };
    let digits = latest.to_string().len();
    if digits == 14 && is_calendar_timestamp(latest) {
        let stamp: u64 = utc_timestamp(now_unix).parse().expect("digits");
        return stamp.max(latest + 1).to_string();
    }
    if digits == 10 {
        return now_unix.max(latest + 1).to_string();
    }
    let width = widths.into_iter().max().unwrap_or(0);
    format!("{:0width$}", latest + 1)
}

fn is_calendar_timestamp(v: u64) -> bool {
    let month = (v / 100_000_000) % 100;
    let day = (v / 1_000_000) % 100;
    let hour = (v / 10_000) % 100;
    let minute = (v / 100) % 100;
    let second = v % 100;
    (1..=12).contains(&month) && (1..=31).contains(&day) && hour < 24 && minute < 60 && second < 61
}

/// `YYYYMMDDhhmmss` in UTC for a Unix time.
pub(crate) fn utc_timestamp(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_match_golang_migrate() {
        let p = parse_file_name("0001_create_users.up.sql").unwrap();
        assert_eq!(
            (p.version_digits, p.title, p.direction),
            ("0001", "create_users", Direction::Up)
        );
        let p = parse_file_name("20240131120000_add index.down.sql").unwrap();
        assert_eq!(
            (p.version_digits, p.title, p.direction),
            ("20240131120000", "add index", Direction::Down)
        );
        // Greedy title, any extension, empty title.
        let p = parse_file_name("1_a.up.b.up.sql").unwrap();
        assert_eq!((p.title, p.direction), ("a.up.b", Direction::Up));
        let p = parse_file_name("1_x.down.txt").unwrap();
        assert_eq!((p.title, p.direction), ("x", Direction::Down));
        assert_eq!(parse_file_name("1_.up.sql").unwrap().title, "");
        for ignored in [
            "README.md",
            "1.up.sql",
            "_1_a.up.sql",
            "1_a.sql",
            "1_a.up",
            "a1_b.up.sql",
            "1_a.UP.sql",
        ] {
            assert!(parse_file_name(ignored).is_none(), "{ignored}");
        }
    }

    #[test]
    fn positions_become_lines_and_columns() {
        let sql = "CREATE TABLE t (id int);\n-- note\nINSERT INTO nope VALUES (1);\n";
        // "nope" starts at character 46: 25 + 8 chars of the first two lines, then 13.
        let pos = sql.find("nope").unwrap() as u32 + 1;
        assert_eq!(line_column(sql, pos), Some((3, 13)));
        assert_eq!(line_column(sql, 1), Some((1, 1)));
        assert_eq!(line_column(sql, 0), None);
        assert_eq!(line_column(sql, 10_000), None);
        // Characters, not bytes; CRLF line ends.
        let sql = "SELECT 'é';\r\nSELEC 1;";
        assert_eq!(line_column(sql, 14), Some((2, 1)));
    }

    #[test]
    fn next_versions_follow_the_existing_files() {
        let now = 1_706_702_400; // 2024-01-31 12:00:00 UTC
        assert_eq!(utc_timestamp(now), "20240131120000");
        assert_eq!(utc_timestamp(0), "19700101000000");
        assert_eq!(utc_timestamp(951_782_400), "20000229000000");
        assert_eq!(next_version(None, vec![], now), "000001");
        assert_eq!(next_version(Some(7), vec![6, 6], now), "000008");
        assert_eq!(next_version(Some(9), vec![1, 1], now), "10");
        assert_eq!(next_version(Some(41), vec![3], now), "042");
        assert_eq!(
            next_version(Some(20230101000000), vec![14], now),
            "20240131120000"
        );
        // A clock behind the newest timestamp still moves forward.
        assert_eq!(
            next_version(Some(20990101000000), vec![14], now),
            "20990101000001"
        );
        assert_eq!(
            next_version(Some(1_485_949_617), vec![10], now),
            "1706702400"
        );
    }
}
