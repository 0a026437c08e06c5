//! A mapping bound to the real target table: checked against the catalog, its SQL rendered.
//!
//! Binding happens at start-up (a bad mapping stops the process with one clear line) and again
//! when `/readyz` finds that the table's shape changed since (someone may have altered it; see
//! `FitWatch`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use sqlx::{Executor, PgPool};

use crate::compiler::catalog::{self, TargetShape};
use crate::compiler::mapping::{Mapping, MappingError};
use crate::compiler::render::{RenderedSql, Renderer};

/// A mapping that fits its table, with the statements every path runs.
#[derive(Debug, Clone)]
pub struct BoundMapping {
    pub mapping: Mapping,
    pub shape: TargetShape,
    pub sql: RenderedSql,
    /// What fits but deserves a look (see `Renderer::warnings`): logged at start-up.
    pub warnings: Vec<String>,
}

/// Binding failed: either the database could not be asked, or the mapping does not fit.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(transparent)]
    Mapping(#[from] MappingError),
    #[error("cannot inspect the target table: {}", crate::sqlstate::describe(.0))]
    Database(#[from] sqlx::Error),
    /// The role lacks a privilege on the target or a type the mapping uses.
    #[error("{0}; run `usersync doctor` for every privilege usersync needs")]
    Privilege(String),
}

impl BoundMapping {
    /// Checks `mapping` against the live table and renders its SQL. Its probes read
    /// `auth.users`: `startup::bind` first makes sure the role may, so that a missing right is
    /// reported as that, not as a column that cannot be stored.
    pub async fn bind(db: &PgPool, mapping: Mapping) -> Result<Self, BindError> {
        let target = mapping.target.qualified();
        let shape = catalog::target_shape(db, &mapping.target)
            .await?
            .ok_or_else(|| {
                MappingError::Invalid(format!("target table {target} does not exist"))
            })?;
        check_columns(&mapping, &shape)?;
        let renderer = Renderer::new(&mapping, &shape);
        // Let Postgres type-check each value against its column, so that a mapping that can
        // never be written (`uuid` into `integer`, or a text column into an integer one) is
        // refused now, naming the column. Neither probe touches a row.
        for column in &mapping.columns {
            let cannot_store = |e: sqlx::Error| match e {
                sqlx::Error::Database(db_err) if db_err.code().as_deref() == Some("42501") => {
                    BindError::Privilege(db_err.message().to_owned())
                }
                sqlx::Error::Database(db_err) => BindError::Mapping(MappingError::Column {
                    column: column.name.to_string(),
                    reason: format!(
                        "its value cannot be stored in {target}.{}: {}",
                        column.name,
                        db_err.message()
                    ),
                }),
                other => BindError::Database(other),
            };
            let probe = format!(
                "select {} from auth.users s limit 0",
                renderer.typed_expr(column, "s")
            );
            sqlx::query(&probe)
                .execute(db)
                .await
                .map_err(cannot_store)?;
            if let Some(insert) = renderer.assignment_probe(column) {
                db.prepare(&insert).await.map_err(cannot_store)?;
            }
        }
        let sql = renderer.render();
        let warnings = renderer.warnings();
        Ok(Self {
            mapping,
            shape,
            sql,
            warnings,
        })
    }
}

/// What `/readyz` keeps of the bound mapping's fit to the live table: the shape it was last
/// bound against, and how many times it was bound. A probe reads the target's shape (three
/// catalog reads, nothing rendered) and binds the mapping again only when the shape differs;
/// whatever the shape, the role must still hold the privileges every sync needs on the table.
#[derive(Debug)]
pub struct FitWatch {
    fitted: Mutex<TargetShape>,
    binds: AtomicU64,
}

impl FitWatch {
    /// Watches `bound`, whose binding at start-up counts as the first.
    pub fn new(bound: &BoundMapping) -> Self {
        Self {
            fitted: Mutex::new(bound.shape.clone()),
            binds: AtomicU64::new(1),
        }
    }

    /// How many times the mapping was bound: at start-up, then once per shape change a probe
    /// found.
    pub fn binds(&self) -> u64 {
        self.binds.load(Ordering::Relaxed)
    }

    /// Whether `bound`'s mapping still fits the live table, and the role may still read and
    /// write it (and delete from it, when `deletes`: a policy deletes profiles).
    pub async fn check(
        &self,
        db: &PgPool,
        bound: &BoundMapping,
        deletes: bool,
    ) -> Result<(), BindError> {
        let target = &bound.mapping.target;
        if let Ok(Some(shape)) = catalog::target_shape(db, target).await {
            let missing = shape.privileges.missing(deletes);
            if !missing.is_empty() {
                let role = &shape.privileges.role;
                let table = target.qualified();
                return Err(BindError::Privilege(format!(
                    "role {role} lacks {} on {table}: run `grant {} on table {table} to {role}` as its \
                     owner",
                    missing.join(", ").to_uppercase(),
                    missing.join(", ")
                )));
            }
            if shape == *self.fitted.lock().expect("not poisoned") {
                return Ok(());
            }
        }
        self.binds.fetch_add(1, Ordering::Relaxed);
        let rebound = BoundMapping::bind(db, bound.mapping.clone()).await?;
        *self.fitted.lock().expect("not poisoned") = rebound.shape;
        Ok(())
    }
}

/// Every mapped column exists and is writable; the key is a `uuid`; and every NOT NULL column
/// has a value from somewhere, or a sync would fail on the first user.
fn check_columns(mapping: &Mapping, shape: &TargetShape) -> Result<(), MappingError> {
    let target = mapping.target.qualified();
    let key = mapping.target.key.as_str();
    match shape.columns.get(key) {
        None => {
            return Err(MappingError::Invalid(format!(
                "key column `{key}` does not exist in {target}"
            )))
        }
        Some(info) if info.sql_type != "uuid" => {
            return Err(MappingError::Invalid(format!(
                "key column `{key}` of {target} is {}, not uuid",
                info.sql_type
            )))
        }
        Some(_) => {}
    }
    for column in &mapping.columns {
        let name = column.name.as_str();
        let info = shape
            .columns
            .get(name)
            .ok_or_else(|| MappingError::Column {
                column: name.into(),
                reason: format!("does not exist in {target}"),
            })?;
        if !info.writable {
            return Err(MappingError::Column {
                column: name.into(),
                reason: format!("is generated in {target} and cannot be written"),
            });
        }
    }
    let mut unfilled: Vec<&String> = shape
        .columns
        .iter()
        .filter(|(name, info)| {
            info.not_null
                && !info.has_default
                && name.as_str() != key
                && !mapping.columns.iter().any(|c| c.name.as_str() == *name)
        })
        .map(|(name, _)| name)
        .collect();
    unfilled.sort();
    if let Some(name) = unfilled.first() {
        return Err(MappingError::Column {
            column: (*name).clone(),
            reason: format!(
                "is NOT NULL in {target} with no default, and the mapping gives it no value"
            ),
        });
    }
    Ok(())
}
