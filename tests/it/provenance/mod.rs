//! Provenance of readings: resend and upgrade.
//! One module per former `tests/tests/<name>.rs` file, named as it was.

mod provenance_resend;
mod provenance_upgrade;
