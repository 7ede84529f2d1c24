//! Database migrations on PostgreSQL, compatible with golang-migrate.
//!
//! cutover reads golang-migrate's files (`{version}_{title}.up.sql` / `.down.sql`), its table
//! (`schema_migrations(version bigint not null primary key, dirty boolean not null)`, one row,
//! written like its postgres driver's `SetVersion`), and takes its advisory lock, so either tool
//! can take over a database the other managed, and the two exclude each other. cutover adds
//! sha256 checksums of applied up files in a side table golang-migrate ignores
//! (`cutover_migration_checksums`).
//!
//! # Layout
//! - [`files`]: scanning a folder, `create`, error positions to line:column.
//! - [`lock`]: golang-migrate's lock keys; taking them with a timeout; naming the holder.
//! - `session`: the one dedicated connection everything runs on; the two tables.
//! - `error.rs`: [`MigrateError`]; `options.rs`: [`Options`] and [`Progress`]; `status.rs`:
//!   `migrate status`; `apply.rs`: `up`, `down` and `force` under the lock.
//!
//! # One step, as golang-migrate does it
//!
//! ```text
//!   clean at V ──SetVersion(T, dirty)──> dirty at T ──run file (one batch)──> SetVersion(T, clean) ──> clean at T
//!                                             │
//!                                             └── file fails: stays dirty at T; every up/down is
//!                                                 refused until `force VERSION` after a manual fix
//! ```
//!
//! For `up` the target T is the file's version; for `down` it is the previous version (none
//! below the first one, written as golang-migrate's `-1` while dirty). Everything runs on one
//! connection holding the lock, which is released at the end (and by the server, should the
//! connection drop). Each file runs as one simple-query batch, with no transaction added: a
//! multi-statement batch is one implicit transaction in PostgreSQL unless the file manages its
//! own.

mod apply;
mod error;
pub mod files;
pub mod lock;
mod options;
mod session;
mod status;

pub use apply::{down, force, up};
pub(crate) use error::describe;
pub use error::MigrateError;
pub use files::{create, line_column, Direction, Migration, MigrationFile, Migrations};
pub use lock::{advisory_lock_id, lock_keys, LockHolder};
pub use options::{Options, Progress, ProgressFn, Step};
pub use session::{CHECKSUM_TABLE, VERSION_TABLE};
pub use status::{status, AppliedFile, ChangedFile, MigrateStatus, PendingFile};
