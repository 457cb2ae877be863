//! The archiver: aged chunks to Parquet (local directory and S3), locks, races, crash resume, restore and verification.
//! One module per former `tests/tests/<name>.rs` file, named as it was.

mod archiver_checksum_py;
mod archiver_chunk_check_race;
mod archiver_chunk_lock;
mod archiver_concurrent;
mod archiver_crash_resume;
mod archiver_daemon;
mod archiver_drop_commit;
mod archiver_local_dir;
mod archiver_migrate_archive;
mod archiver_readers;
mod archiver_restore;
mod archiver_s3;
mod archiver_verify;
