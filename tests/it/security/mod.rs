//! Security: TLS, roles, the mover's and the trials' roles.
//! One module per former `tests/tests/<name>.rs` file, named as it was.

mod security_mover;
mod security_roles;
mod security_tls;
mod security_trial_roles;
