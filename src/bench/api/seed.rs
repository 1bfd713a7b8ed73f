//! The inbox at scale, written by PostgreSQL itself (`generate_series`): customers with
//! contacts, threads spread over a year with statuses, assignees and tags, messages in
//! several languages, and their search index. Rows the API reads exactly as the worker
//! would have written them; a million threads take minutes, not the hours the job path
//! would.

use std::time::Instant;

use sea_orm::ConnectionTrait;

use crate::store::Store;

/// Words messages are made of, in four languages. The search index holds them folded
/// ([`crate::store::search::fold`]), position for position.
const WORDS: &[&str] = &[
    "printer",
    "invoice",
    "refund",
    "password",
    "delivery",
    "broken",
    "urgent",
    "account",
    "order",
    "shipment",
    "login",
    "error",
    "update",
    "payment",
    "contract",
    "warranty",
    "Drucker",
    "Rechnung",
    "Rückerstattung",
    "Lieferung",
    "kaputt",
    "dringend",
    "Konto",
    "Bestellung",
    "Zahlung",
    "Vertrag",
    "Garantie",
    "Störung",
    "facture",
    "livraison",
    "remboursement",
    "mot",
    "passe",
    "commande",
    "paiement",
    "garantie",
    "problème",
    "café",
    "écran",
    "réseau",
    "factura",
    "envío",
    "contraseña",
    "pedido",
    "pago",
    "garantía",
    "cuenta",
    "avería",
    "the",
    "and",
    "please",
    "thanks",
    "today",
    "again",
    "since",
    "yesterday",
    "still",
    "not",
    "working",
    "help",
    "bitte",
    "danke",
    "merci",
    "gracias",
];

/// Agents the threads are assigned to (`agent-0` …).
pub const AGENTS: u32 = 20;

/// Tags, one on every third thread.
pub const TAGS: &[&str] = &["billing", "shipping", "technical", "vip", "complaint"];

/// A word on about one message in a million, for the rare-word search.
pub const RARE: &str = "zanzibar";

fn sql_array(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    format!("ARRAY[{}]", quoted.join(","))
}

async fn exec(store: &Store, what: &str, sql: &str) -> anyhow::Result<()> {
    let t = Instant::now();
    // Each call may run on another pooled connection: the setting goes with the statements.
    store
        .conn()
        .execute_unprepared(&format!("SET synchronous_commit = off; {sql}"))
        .await?;
    println!("seed: {what} ({:.1} s)", t.elapsed().as_secs_f64());
    Ok(())
}

/// Fills a migrated, empty database with `threads` threads of `per_thread` messages each
/// and `customers` customers.
pub async fn seed(
    store: &Store,
    threads: u64,
    per_thread: u64,
    customers: u64,
) -> anyhow::Result<()> {
    let words = sql_array(WORDS);
    let folded: Vec<String> = WORDS
        .iter()
        .map(|w| crate::store::search::fold(w))
        .collect();
    let folded = sql_array(&folded.iter().map(String::as_str).collect::<Vec<_>>());
    let n_words = WORDS.len();
    let tags = sql_array(TAGS);
    // The index is built once at the end: filling a GIN index row by row is far slower.
    exec(
        store,
        "index off",
        "DROP INDEX IF EXISTS ix_search_docs_tsv",
    )
    .await?;
    exec(
        store,
        "customers and contacts",
        &format!(
            "INSERT INTO customers (id, external_id, name, attributes, created_at, updated_at)
             SELECT gen_random_uuid(), 'cust-' || i, 'Customer ' || i || ' GmbH', '{{}}', now(), now()
             FROM generate_series(1, {customers}) i;
             INSERT INTO contacts (id, kind, address, display_name, created_at, updated_at)
             SELECT gen_random_uuid(), 'email', 'user' || i || '@customer' || i || '.example',
                    (ARRAY['Zoé','Jürgen','François','Ana','Ada','Bob'])[1 + i % 6] || ' Person' || i, now(), now()
             FROM generate_series(1, {customers}) i;
             CREATE UNLOGGED TABLE bench_cu AS SELECT row_number() OVER (ORDER BY external_id) AS n, id FROM customers;
             CREATE UNLOGGED TABLE bench_co AS SELECT row_number() OVER (ORDER BY address) AS n, id, address FROM contacts;
             CREATE INDEX ON bench_cu (n); CREATE INDEX ON bench_co (n);
             INSERT INTO customer_contacts (customer_id, contact_id, created_at)
             SELECT cu.id, co.id, now() FROM bench_cu cu JOIN bench_co co ON co.n = cu.n;
             INSERT INTO search_parties (id, tsv)
             SELECT id, to_tsvector('simple', lower(translate(coalesce(display_name, '') || ' ' || address,
                 'éüçèáñ@.', 'eucean  '))) FROM contacts;
             INSERT INTO search_parties (id, tsv)
             SELECT id, to_tsvector('simple', lower(name || ' ' || replace(external_id, '-', ' '))) FROM customers;"
        ),
    )
    .await?;
    let chunk = 100_000u64;
    let mut from = 1u64;
    while from <= threads {
        let to = (from + chunk - 1).min(threads);
        // Thread i was updated i × 30 s ago: the inbox order is the order of i.
        exec(
            store,
            &format!("threads {from}..{to} with their messages"),
            &format!(
                "CREATE TEMP TABLE bench_t AS
                 SELECT gen_random_uuid() AS id, i,
                        now() - make_interval(secs => i * 30) AS at,
                        (SELECT id FROM bench_cu WHERE n = 1 + i % {customers}) AS customer,
                        (SELECT id FROM bench_co WHERE n = 1 + i % {customers}) AS contact,
                        (SELECT address FROM bench_co WHERE n = 1 + i % {customers}) AS address
                 FROM generate_series({from}, {to}) i;
                 INSERT INTO threads (id, subject, status, assignee, lifecycle, reply_token, version,
                     flags, created_at, updated_at, last_message_at, snippet, has_attachments,
                     attachment_names, item_count, contact_id)
                 SELECT id, ({words})[1 + i % {n_words}] || ' ' || ({words})[1 + (i / 7) % {n_words}],
                        (ARRAY['open','waiting','reminder','closed','closed','closed'])[1 + abs(hashint4(i::int)) % 6],
                        CASE WHEN abs(hashint4(i::int + 7)) % 3 = 0 THEN NULL ELSE 'agent-' || (abs(hashint4(i::int + 11)) % {AGENTS}) END,
                        'default', md5(id::text), {per_thread}, '[]', at - interval '1 day', at, at,
                        'Hello, ' || ({words})[1 + i % {n_words}], false, '[]', {per_thread}, contact
                 FROM bench_t;
                 INSERT INTO thread_customers (thread_id, customer_id, added_at)
                 SELECT id, customer, at FROM bench_t;
                 INSERT INTO thread_tags (thread_id, tag)
                 SELECT id, ({tags})[1 + abs(hashint4(i::int + 13)) % {n_tags}] FROM bench_t WHERE abs(hashint4(i::int + 17)) % 3 = 0;
                 CREATE TEMP TABLE bench_m AS
                 SELECT gen_random_uuid() AS id, t.id AS thread_id, t.contact, t.address, k,
                        t.at - make_interval(secs => ({per_thread} - k) * 600) AS at,
                        ARRAY(SELECT 1 + ((t.i * 31 + k * 17 + g * 7919) % {n_words})::int
                              FROM generate_series(1, 24) g) AS w,
                        (t.i * {per_thread} + k) % 1000000 = 0 AS rare
                 FROM bench_t t, generate_series(1, {per_thread}) k;
                 INSERT INTO messages (id, thread_id, direction, channel, contact_id, \"references\",
                     from_address, to_addresses, cc_addresses, subject, text_body, attempts,
                     created_at, updated_at)
                 SELECT id, thread_id, CASE WHEN k % 2 = 1 THEN 'inbound' ELSE 'outbound' END,
                        'email', contact, '[]', CASE WHEN k % 2 = 1 THEN address ELSE 'support@gochat.example' END,
                        '[]', '[]', 'Re: ' || ({words})[w[1]] || ' ' || ({words})[w[2]],
                        array_to_string(ARRAY(SELECT ({words})[x] FROM unnest(w) x), ' ')
                          || CASE WHEN rare THEN ' {RARE}' ELSE '' END,
                        0, at, at
                 FROM bench_m;
                 INSERT INTO search_docs (id, thread_id, tsv)
                 SELECT id, thread_id, to_tsvector('simple',
                        array_to_string(ARRAY(SELECT ({folded})[x] FROM unnest(w) x), ' ')
                          || ' re ' || ({folded})[w[1]] || ' ' || ({folded})[w[2]]
                          || CASE WHEN rare THEN ' {RARE}' ELSE '' END)
                 FROM bench_m;
                 DROP TABLE bench_t; DROP TABLE bench_m;",
                n_tags = TAGS.len(),
            ),
        )
        .await?;
        from = to + 1;
    }
    exec(
        store,
        "helpers dropped",
        "DROP TABLE bench_cu; DROP TABLE bench_co",
    )
    .await?;
    exec(
        store,
        "search index",
        "CREATE INDEX IF NOT EXISTS ix_search_docs_tsv ON search_docs USING gin (tsv)",
    )
    .await?;
    // VACUUM may not share a statement list (an implicit transaction) with the SET.
    let t = Instant::now();
    store.conn().execute_unprepared("VACUUM ANALYZE").await?;
    println!("seed: vacuum analyze ({:.1} s)", t.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed writes the folded words into the index as single lowercase ASCII words, as
    /// `to_tsvector('simple', …)` must find them again from a folded query.
    #[test]
    fn every_word_folds_to_one_plain_word() {
        for w in WORDS {
            let f = crate::store::search::fold(w);
            assert!(
                !f.is_empty() && f.chars().all(|c| c.is_ascii_lowercase()),
                "{w} -> {f:?}"
            );
        }
        assert_eq!(
            crate::store::search::fold("Rückerstattung"),
            "ruckerstattung"
        );
    }
}
