//! Batch statements whose SQL text does not change with the batch size.
//!
//! A `VALUES (…), (…)` list or an `IN (…)` list is a new statement for every count: on
//! PostgreSQL each one is prepared (a round trip), parsed and planned afresh, and the
//! driver's per-connection statement cache churns. On PostgreSQL, batch inserts therefore
//! send their rows as one `jsonb` array, expanded by `jsonb_populate_recordset` and typed
//! by the table's own row type, and lookups send their keys as one array (`= ANY($1)`):
//! one statement a query, prepared and planned once per connection. `jsonb`, not `json`: a
//! `json` column then holds the same text as when the value is bound alone (`json` would
//! keep the client's spacing). SQLite keeps the lists: its planning is cheap, and its
//! bind-parameter limit is what the callers' chunk sizes are for.

use std::io::Write as _;

use sea_orm::QueryTrait;
use sea_orm::sea_query::extension::postgres::PgFunc;
use sea_orm::sea_query::{
    Alias, ArrayType, Expr, ExprTrait, Func, InsertStatement, Query, SimpleExpr, Value,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DbBackend, EntityName, EntityTrait, IdenStatic, Iterable,
};

use super::StoreError;

/// An insert of `rows` (an `ON CONFLICT` or `RETURNING` may still be added). Rows must set
/// the same columns; when they do not, or a value has a type the JSON form does not carry
/// exactly, the `VALUES` form is used instead, so the result is the same either way.
pub(crate) fn insert_statement<A>(
    backend: DbBackend,
    rows: impl IntoIterator<Item = A>,
) -> Result<InsertStatement, StoreError>
where
    A: ActiveModelTrait,
{
    let rows: Vec<A> = rows.into_iter().collect();
    if backend == DbBackend::Postgres
        && let Some(insert) = as_recordset(&rows)?
    {
        return Ok(insert);
    }
    Ok(A::Entity::insert_many(rows).into_query())
}

/// `INSERT INTO t (cols) SELECT cols FROM jsonb_populate_recordset(NULL::t, $1::jsonb)`,
/// or none when the rows cannot be sent that way.
fn as_recordset<A>(rows: &[A]) -> Result<Option<InsertStatement>, StoreError>
where
    A: ActiveModelTrait,
{
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    // Which columns the first row sets; every row must set the same ones.
    let set: Vec<bool> = <A::Entity as EntityTrait>::Column::iter()
        .map(|c| !first.get(c).is_not_set())
        .collect();
    let mut json = JsonRows::with_capacity(rows.len());
    for row in rows {
        json.start_row();
        for (column, &wanted) in <A::Entity as EntityTrait>::Column::iter().zip(&set) {
            match row.get(column).into_value() {
                Some(value) if wanted => {
                    if !json.field(column.as_str(), &value) {
                        return Ok(None);
                    }
                }
                None if !wanted => {}
                _ => return Ok(None),
            }
        }
    }
    let columns: Vec<_> = <A::Entity as EntityTrait>::Column::iter()
        .zip(&set)
        .filter_map(|(c, &wanted)| wanted.then_some(c))
        .collect();
    let entity = A::Entity::default();
    let table = entity.table_name();
    let Some(record) = record_type(table) else {
        return Ok(None);
    };
    let mut select = Query::select();
    select.columns(columns.iter().copied()).from_function(
        Func::cust("jsonb_populate_recordset")
            .arg(record)
            .arg(json.into_param()?),
        Alias::new("r"),
    );
    let mut insert = Query::insert();
    insert
        .into_table(entity.table_ref())
        .columns(columns)
        .select_from(select)
        .map_err(|e| StoreError::Invalid(format!("a batch insert into {table}: {e}")))?;
    Ok(Some(insert))
}

/// `NULL::"table"`: the table's row type, which types every field of the JSON rows.
fn record_type(table: &str) -> Option<Expr> {
    (!table.contains('"')).then(|| Expr::cust(format!("NULL::\"{table}\"")))
}

/// Rows as a JSON array of objects, the form `jsonb_populate_record(set)` reads.
pub(crate) struct JsonRows {
    buf: Vec<u8>,
    /// Fields in the current row so far (the next one needs a comma).
    fields: usize,
}

impl JsonRows {
    pub(crate) fn with_capacity(rows: usize) -> JsonRows {
        let mut buf = Vec::with_capacity(rows * 512 + 2);
        buf.push(b'[');
        JsonRows { buf, fields: 0 }
    }

    /// Opens the next row (closing the one before).
    pub(crate) fn start_row(&mut self) {
        if self.buf.len() > 1 {
            self.buf.extend_from_slice(b"},");
        }
        self.buf.push(b'{');
        self.fields = 0;
    }

    /// Adds a field to the current row; false when the value's type is not one this form
    /// carries exactly (the caller falls back to `VALUES`).
    pub(crate) fn field(&mut self, name: &str, value: &Value) -> bool {
        if self.fields > 0 {
            self.buf.push(b',');
        }
        self.fields += 1;
        if serde_json::to_writer(&mut self.buf, name).is_err() {
            return false;
        }
        self.buf.push(b':');
        write_value(&mut self.buf, value).unwrap_or(false)
    }

    /// The JSON text of the rows, to bind as the one parameter of the statement.
    pub(crate) fn finish(mut self) -> Result<String, StoreError> {
        if self.buf.len() > 1 {
            self.buf.push(b'}');
        }
        self.buf.push(b']');
        String::from_utf8(self.buf)
            .map_err(|e| StoreError::Invalid(format!("a batch's JSON is not UTF-8: {e}")))
    }

    /// The rows as one bound parameter, `CAST($n AS jsonb)`.
    fn into_param(self) -> Result<Expr, StoreError> {
        Ok(Expr::val(self.finish()?).cast_as("jsonb"))
    }
}

/// Writes `value` as the JSON that PostgreSQL's input function for the column reads back
/// as the same value; false when its type is not one of those (the caller falls back).
fn write_value(out: &mut Vec<u8>, value: &Value) -> std::io::Result<bool> {
    match value {
        Value::Bool(None)
        | Value::SmallInt(None)
        | Value::Int(None)
        | Value::BigInt(None)
        | Value::String(None)
        | Value::Bytes(None)
        | Value::Json(None)
        | Value::Uuid(None)
        | Value::ChronoDateTimeUtc(None) => out.extend_from_slice(b"null"),
        Value::Bool(Some(b)) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::SmallInt(Some(n)) => write!(out, "{n}")?,
        Value::Int(Some(n)) => write!(out, "{n}")?,
        Value::BigInt(Some(n)) => write!(out, "{n}")?,
        Value::String(Some(s)) => serde_json::to_writer(&mut *out, s)?,
        // PostgreSQL's `bytea` text form: `\x` and two hex digits a byte.
        Value::Bytes(Some(bytes)) => {
            out.extend_from_slice(b"\"\\\\x");
            let start = out.len();
            out.resize(start + bytes.len() * 2, 0);
            hex::encode_to_slice(bytes, &mut out[start..]).map_err(std::io::Error::other)?;
            out.push(b'"');
        }
        Value::Uuid(Some(id)) => write!(out, "\"{id}\"")?,
        // Microseconds, truncated, as the binary protocol sends them.
        Value::ChronoDateTimeUtc(Some(at)) => {
            write!(out, "\"{}\"", at.format("%Y-%m-%dT%H:%M:%S%.6fZ"))?
        }
        // A JSON `null` in a recordset reads as SQL NULL, not as the jsonb value `null`.
        Value::Json(Some(json)) if serde_json::Value::is_null(json) => return Ok(false),
        Value::Json(Some(json)) => serde_json::to_writer(&mut *out, json.as_ref())?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// `column IN (values)`; on PostgreSQL `column = ANY(CAST($n AS type[]))`, the values
/// bound as one array parameter, so the SQL is the same for any number of values.
pub fn any_of<C, V>(
    backend: DbBackend,
    column: C,
    values: impl IntoIterator<Item = V>,
) -> SimpleExpr
where
    C: ColumnTrait,
    V: ArrayElement,
{
    let column = Expr::col(column.as_column_ref());
    if backend != DbBackend::Postgres {
        return column.is_in(values.into_iter().map(ArrayElement::into_value));
    }
    column.eq(PgFunc::any(
        Expr::val(array(values)).cast_as(format!("{}[]", V::PG_TYPE)),
    ))
}

/// `values` as one PostgreSQL array parameter (`V::PG_TYPE[]`); the driver sends the
/// elements as they are, so no text can end an element or the array.
pub(crate) fn array<V: ArrayElement>(values: impl IntoIterator<Item = V>) -> Value {
    let elements: Vec<Value> = values.into_iter().map(ArrayElement::into_value).collect();
    Value::Array(V::array_type(), Some(Box::new(elements)))
}

/// A value [`any_of`] can send as an element of a PostgreSQL array.
pub trait ArrayElement {
    /// The element type the array is cast to.
    const PG_TYPE: &'static str;
    /// The element type of the bound array.
    fn array_type() -> ArrayType;
    fn into_value(self) -> Value;
}

impl ArrayElement for uuid::Uuid {
    const PG_TYPE: &'static str = "uuid";
    fn array_type() -> ArrayType {
        ArrayType::Uuid
    }
    fn into_value(self) -> Value {
        self.into()
    }
}

impl ArrayElement for &str {
    const PG_TYPE: &'static str = "text";
    fn array_type() -> ArrayType {
        ArrayType::String
    }
    fn into_value(self) -> Value {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use gochat_entities::outbox::{self, OutboxKind};
    use sea_orm::ActiveValue::{NotSet, Set};

    fn row(n: u32, headers: Option<serde_json::Value>) -> outbox::ActiveModel {
        let at = Utc.with_ymd_and_hms(2026, 12, 3, 9, 0, 0).unwrap()
            + chrono::Duration::nanoseconds(123_456_789);
        outbox::ActiveModel {
            id: Set(uuid::Uuid::from_u128(u128::from(n))),
            kind: Set(OutboxKind::Job),
            exchange: Set(String::new()),
            routing_key: Set("outbound-message".into()),
            message_id: Set(format!("m-{n}")),
            payload: Set("{\"quote\":\"\\\"\",\"tab\":\"\t\",\"é\":\"✓\"}".into()),
            headers: Set(headers),
            created_at: Set(at),
            available_at: Set(at),
            attempts: Set(0),
            published_at: Set(None),
            last_error: NotSet,
        }
    }

    fn sql(backend: DbBackend, rows: Vec<outbox::ActiveModel>) -> (String, Vec<Value>) {
        let statement = backend.build(&insert_statement(backend, rows).unwrap());
        let values = statement.values.map(|v| v.0).unwrap_or_default();
        (statement.sql, values)
    }

    #[test]
    fn postgres_sends_any_number_of_rows_as_one_statement_with_one_parameter() {
        let (one, one_values) = sql(DbBackend::Postgres, vec![row(1, None)]);
        let (three, three_values) = sql(
            DbBackend::Postgres,
            vec![row(1, None), row(2, None), row(3, None)],
        );
        assert_eq!(one, three, "the SQL must not depend on the row count");
        assert!(
            one.contains(r#"FROM jsonb_populate_recordset(NULL::"outbox", CAST($1 AS jsonb))"#),
            "{one}"
        );
        assert!(
            !one.contains("last_error"),
            "a column not set is left to its default: {one}"
        );
        assert_eq!((one_values.len(), three_values.len()), (1, 1));
        let Value::String(Some(json)) = &three_values[0] else {
            panic!("{three_values:?}");
        };
        let rows: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(rows.as_array().map(Vec::len), Some(3));
        assert_eq!(rows[1]["message_id"], "m-2");
        assert_eq!(rows[1]["kind"], "job");
        assert_eq!(rows[1]["headers"], serde_json::Value::Null);
        assert_eq!(
            rows[1]["payload"],
            "{\"quote\":\"\\\"\",\"tab\":\"\t\",\"é\":\"✓\"}"
        );
        // Microseconds, truncated as the binary protocol truncates them.
        assert_eq!(rows[1]["created_at"], "2026-12-03T09:00:00.123456Z");
        assert_eq!(rows[1]["id"], uuid::Uuid::from_u128(2).to_string());
    }

    #[test]
    fn sqlite_and_rows_the_json_cannot_carry_exactly_keep_the_values_list() {
        let (sqlite, values) = sql(DbBackend::Sqlite, vec![row(1, None), row(2, None)]);
        assert!(sqlite.contains("VALUES"), "{sqlite}");
        assert_eq!(values.len(), 2 * 11);

        // Rows that set different columns.
        let mut short = row(2, None);
        short.attempts = NotSet;
        let (mixed, _) = sql(DbBackend::Postgres, vec![row(1, None), short]);
        assert!(mixed.contains("VALUES"), "{mixed}");

        // A jsonb `null` (not SQL NULL), which a recordset would read as SQL NULL.
        let (null, _) = sql(
            DbBackend::Postgres,
            vec![row(1, Some(serde_json::Value::Null))],
        );
        assert!(null.contains("VALUES"), "{null}");
        let (object, _) = sql(
            DbBackend::Postgres,
            vec![row(
                1,
                Some(serde_json::json!({"x-retry": [1, "two", null]})),
            )],
        );
        assert!(object.contains("jsonb_populate_recordset"), "{object}");
    }

    #[test]
    fn postgres_lookups_send_their_keys_as_one_array() {
        use sea_orm::{QueryFilter, QueryTrait};
        let query = |backend, keys: &[&str]| {
            let statement = outbox::Entity::find()
                .filter(any_of(
                    backend,
                    outbox::Column::MessageId,
                    keys.iter().copied(),
                ))
                .build(backend);
            (
                statement.sql,
                statement.values.map(|v| v.0).unwrap_or_default(),
            )
        };
        let (one, _) = query(DbBackend::Postgres, &["a"]);
        let (three, values) = query(DbBackend::Postgres, &["a", r#"b"c\d"#, "NULL"]);
        assert_eq!(one, three, "the SQL must not depend on the key count");
        assert!(
            one.ends_with(r#""outbox"."message_id" = ANY(CAST($1 AS text[]))"#),
            "{one}"
        );
        let texts = |items: &[&str]| {
            let items = items.iter().map(|s| Value::from(*s)).collect();
            Value::Array(ArrayType::String, Some(Box::new(items)))
        };
        assert_eq!(
            values,
            [texts(&["a", r#"b"c\d"#, "NULL"])],
            "one array parameter, every element as given"
        );
        let (none, values) = query(DbBackend::Postgres, &[]);
        assert_eq!((none, values), (one, vec![texts(&[])]));

        let (lite, values) = query(DbBackend::Sqlite, &["a", "b"]);
        assert!(lite.contains(r#""message_id" IN (?, ?)"#), "{lite}");
        assert_eq!(values.len(), 2);

        let id = uuid::Uuid::from_u128(7);
        let statement = outbox::Entity::find()
            .filter(any_of(DbBackend::Postgres, outbox::Column::Id, [id, id]))
            .build(DbBackend::Postgres);
        assert!(
            statement.sql.ends_with("ANY(CAST($1 AS uuid[]))"),
            "{}",
            statement.sql
        );
        assert_eq!(
            statement.values.map(|v| v.0).unwrap_or_default(),
            [Value::Array(
                ArrayType::Uuid,
                Some(Box::new(vec![id.into(), id.into()]))
            )]
        );
    }
}
