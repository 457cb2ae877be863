//! Operations: the compose files, default ports, and the monitoring rules and dashboard against live services.
//! One module per former `tests/tests/<name>.rs` file, named as it was.

mod compose_file;
mod compose_ops;
mod default_ports;
mod ops_monitoring;
