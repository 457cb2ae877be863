//! Login users in migration 9's group roles (schemas/ROLES.md), and checking what a role is
//! refused.

use tokio_postgres::Client;

use crate::{connect, Stack};

/// Creates each `(login, group role)` of `users` on every server of the stack: the login
/// user (`LOGIN`, no password: the plain stack trusts local logins) `IN ROLE` its group,
/// which the owner's migrations created. Idempotent and safe against a concurrent test
/// doing the same (roles are cluster-wide).
pub async fn ensure_login_users(stack: &Stack, users: &[(&str, &str)]) {
    for url in &stack.shard_urls {
        let admin = connect(url).await;
        for (user, group) in users {
            admin
                .batch_execute(&format!(
                    "DO $$ BEGIN
                         IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{user}') THEN
                             BEGIN
                                 CREATE ROLE {user} LOGIN;
                             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                             END;
                         END IF;
                         BEGIN
                             GRANT {group} TO {user};
                         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                         END;
                     END $$"
                ))
                .await
                .unwrap();
        }
    }
}

/// The SQLSTATE `sql` fails with, `None` when it succeeds. A failed explicit transaction is
/// rolled back.
pub async fn sqlstate(c: &Client, sql: &str) -> Option<String> {
    match c.batch_execute(sql).await {
        Ok(()) => None,
        Err(e) => {
            c.batch_execute("ROLLBACK").await.unwrap();
            Some(
                e.code()
                    .map_or_else(|| format!("{e}"), |s| s.code().to_string()),
            )
        }
    }
}
