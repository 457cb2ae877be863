//! Which SQL the query server runs: reads only.
//!
//! The analysts of a trial may read the catalog's tables (`measurements` and the trial tables
//! of `crate::trial_tables`) and the catalog, nothing else.
//! A statement is checked on its parsed form, before anything is planned, against an allow
//! list (never a deny list, so a statement kind a new DataFusion release adds is refused
//! until someone allows it):
//! - `SELECT`, `WITH`, `VALUES` (a query; `SELECT … INTO` is refused);
//! - `EXPLAIN [ANALYZE] <one of these>`;
//! - `SHOW TABLES`, `SHOW COLUMNS`, `SHOW <variable>`, `SHOW FUNCTIONS`, `SHOW CREATE`,
//!   `DESCRIBE <table>`: DataFusion answers them from `information_schema`.
//!
//! A query may name tables (the catalog's; a `WITH` name) and call the table functions of
//! [`super::sandbox::TABLE_FUNCTIONS`]; a file or URL in place of a table (`FROM
//! '/etc/passwd'`, `FROM 'file:///…'`) and any other table function (`read_csv(…)`,
//! `read_parquet(…)`, `TABLE(…)`) are refused as well, before the planner looks for them.
//!
//! Everything else is refused: DDL (`CREATE`/`DROP`/`ALTER`, `CREATE EXTERNAL TABLE`,
//! `CREATE FUNCTION`), DML (`INSERT`, `UPDATE`, `DELETE`, `MERGE`, `TRUNCATE`), `COPY`,
//! `SET`/`RESET`, transactions, SQL-level `PREPARE`/`EXECUTE`/`DEALLOCATE` (they would keep
//! state in the session; Flight SQL's prepared statements are the way to bind values), and a
//! statement nested in a query (`WITH … INSERT`). The plan is then checked once more by
//! DataFusion's own `SQLOptions` with DDL, DML and statements all off ([`read_only`]).

use datafusion::execution::context::SQLOptions;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    visit_statements, ObjectName, ObjectNamePart, SetExpr, Statement, TableFactor, Visit, Visitor,
};
use std::ops::ControlFlow;

/// What the server answers a refused statement with (after the statement's kind).
pub const ALLOWED: &str = "only reads of the tables (measurements, audit_log, participants, participant_status_changes) and the catalog are allowed: SELECT, WITH, VALUES, EXPLAIN, SHOW, DESCRIBE";

/// DataFusion's own check of a plan, with everything that is not a read switched off.
pub fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Checks one parsed statement.
///
/// # Errors
/// The refused statement's kind (its leading keywords, e.g. `DROP TABLE`, `COPY`,
/// `CREATE EXTERNAL TABLE`) when it is not a read.
pub fn check(stmt: &DfStatement) -> Result<(), String> {
    match stmt {
        DfStatement::Statement(s) => check_sql(s),
        DfStatement::Explain(e) => check(&e.statement),
        DfStatement::CreateExternalTable(_) => Err("CREATE EXTERNAL TABLE".into()),
        DfStatement::CopyTo(_) => Err("COPY".into()),
        DfStatement::Reset(_) => Err("RESET".into()),
    }
}

fn check_sql(stmt: &Statement) -> Result<(), String> {
    match stmt {
        Statement::Explain { statement, .. } => return check_sql(statement),
        Statement::Query(q) => {
            if let SetExpr::Select(s) = q.body.as_ref() {
                if s.into.is_some() {
                    return Err("SELECT INTO".into());
                }
            }
        }
        Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowCreate { .. } => {}
        other => return Err(kind(other)),
    }
    // A statement inside the query (`WITH x AS (…) INSERT …`, a data-modifying CTE).
    let nested = visit_statements(stmt, |s| {
        if std::ptr::eq(s, stmt) {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(kind(s))
        }
    });
    if let ControlFlow::Break(k) = nested {
        return Err(k);
    }
    match stmt.visit(&mut Relations) {
        ControlFlow::Break(k) => Err(k),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// Refuses table functions off the allow list and files or URLs used as tables.
struct Relations;

fn last_name(name: &ObjectName) -> String {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(id)) => id.value.to_lowercase(),
        Some(ObjectNamePart::Function(f)) => f.name.value.to_lowercase(),
        None => String::new(),
    }
}

impl Visitor for Relations {
    type Break = String;

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<String> {
        match t {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => {
                let f = last_name(name);
                if super::sandbox::TABLE_FUNCTIONS.contains(&f.as_str()) {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(format!("table function {f}"))
                }
            }
            TableFactor::Table {
                name, args: None, ..
            } => {
                let path = name.0.iter().any(|p| match p {
                    ObjectNamePart::Identifier(id) => {
                        id.quote_style == Some('\'') || id.value.contains(['/', '\\', ':'])
                    }
                    ObjectNamePart::Function(_) => true,
                });
                if path {
                    ControlFlow::Break("a file or URL in place of a table".into())
                } else {
                    ControlFlow::Continue(())
                }
            }
            TableFactor::TableFunction { .. } => ControlFlow::Break("TABLE(…)".into()),
            _ => ControlFlow::Continue(()),
        }
    }
}

/// A statement's leading keywords as sqlparser prints them (keywords upper case,
/// identifiers as written): `DROP TABLE`, `INSERT INTO`, `SET`, at most three words.
fn kind(stmt: &Statement) -> String {
    let text = stmt.to_string();
    let words: Vec<&str> = text
        .split_whitespace()
        .take_while(|w| w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .take(3)
        .collect();
    if words.is_empty() {
        "this statement".into()
    } else {
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;

    fn verdict(sql: &str) -> Result<(), String> {
        let mut stmts = DFParser::parse_sql(sql).unwrap();
        assert_eq!(stmts.len(), 1, "{sql}");
        check(&stmts.pop_front().unwrap())
    }

    #[test]
    fn reads_pass() {
        for sql in [
            "SELECT count(*) FROM measurements",
            "WITH d AS (SELECT * FROM measurements) SELECT count(*) FROM d",
            "VALUES (1), (2)",
            "EXPLAIN SELECT 1",
            "EXPLAIN ANALYZE SELECT count(*) FROM measurements",
            "SHOW TABLES",
            "SHOW COLUMNS FROM measurements",
            "SHOW datafusion.execution.batch_size",
            "DESCRIBE measurements",
            "SELECT * FROM generate_series(1, 3)",
        ] {
            assert_eq!(verdict(sql), Ok(()), "{sql}");
        }
    }

    #[test]
    fn everything_else_is_refused_by_kind() {
        for (sql, kind) in [
            ("DROP TABLE measurements", "DROP TABLE"),
            ("CREATE TABLE measurements AS SELECT 1 AS x", "CREATE TABLE"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
            ("ALTER TABLE measurements RENAME TO m", "ALTER TABLE"),
            ("INSERT INTO measurements VALUES (1)", "INSERT INTO"),
            ("DELETE FROM measurements", "DELETE FROM"),
            ("UPDATE measurements SET value = 0", "UPDATE"),
            ("TRUNCATE TABLE measurements", "TRUNCATE TABLE"),
            ("SET datafusion.execution.batch_size = 1", "SET"),
            ("RESET datafusion.execution.batch_size", "RESET"),
            (
                "CREATE EXTERNAL TABLE leak (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
                "CREATE EXTERNAL TABLE",
            ),
            ("COPY (SELECT 1) TO '/tmp/x.csv' STORED AS CSV", "COPY"),
            ("COPY measurements TO '/tmp/x.parquet'", "COPY"),
            (
                "CREATE FUNCTION f(DOUBLE) RETURNS DOUBLE RETURN $1 + 1",
                "CREATE FUNCTION",
            ),
            ("PREPARE p AS SELECT 1", "PREPARE"),
            ("EXECUTE p", "EXECUTE"),
            ("BEGIN TRANSACTION", "BEGIN TRANSACTION"),
            ("EXPLAIN DROP TABLE measurements", "DROP TABLE"),
            ("EXPLAIN COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"),
            ("SELECT * INTO t FROM measurements", "SELECT INTO"),
            (
                "WITH x AS (SELECT 1) INSERT INTO measurements SELECT * FROM x",
                "INSERT INTO",
            ),
            (
                "SELECT * FROM '/etc/passwd'",
                "a file or URL in place of a table",
            ),
            (
                "SELECT count(*) FROM measurements m JOIN 'file:///etc/passwd' p ON true",
                "a file or URL in place of a table",
            ),
            (
                "SELECT * FROM (SELECT * FROM read_csv('/etc/passwd'))",
                "table function read_csv",
            ),
            (
                "EXPLAIN SELECT * FROM read_parquet('s3://bucket/x')",
                "table function read_parquet",
            ),
        ] {
            assert_eq!(verdict(sql), Err(kind.to_string()), "{sql}");
        }
    }
}
