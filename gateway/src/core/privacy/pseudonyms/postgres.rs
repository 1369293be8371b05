//! The map in PostgreSQL (`deid.store = "postgres://..."`), shared by gateway replicas.
//!
//! One table, `pseudonyms (project, pseudonym) -> (kind, value, issuer)`, created or migrated at
//! start (under an advisory lock, so replicas starting together do not race; the version in
//! `dicomweb_gateway_schema`). Inserts are `ON CONFLICT DO NOTHING`: two replicas emitting the
//! same pseudonym at once is normal, as HMAC pseudonyms are deterministic. A pseudonym that
//! already stands for a different original is an error, never overwritten. Writes are batched
//! by one thread (one transaction for all the requests waiting), and what this replica recorded
//! or resolved recently is kept in memory, so that it still resolves while the database is down.

use std::str::FromStr;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use futures::future::BoxFuture;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{ToSql, Type};
use postgres::NoTls;
use r2d2_postgres::PostgresConnectionManager;
use tokio::sync::oneshot;

use crate::config::ConnectionString;

use super::{key, recent, Kind, Original, PseudonymStore, Recent, Unavailable, Writer};

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// The schema, one step per version; a step runs once, in order.
const MIGRATIONS: &[&str] = &["CREATE TABLE pseudonyms (
        project text NOT NULL,
        pseudonym text NOT NULL,
        kind text NOT NULL CHECK (kind IN ('study', 'series', 'instance', 'patient')),
        value text NOT NULL,
        issuer text,
        recorded timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (project, pseudonym)
    )"];

/// The advisory lock held while the schema is migrated ("dicomweb" in ASCII).
const SCHEMA_LOCK: i64 = 0x6469_636f_6d77_6562;

const INSERT: &str = "INSERT INTO pseudonyms (project, pseudonym, kind, value, issuer)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
    ON CONFLICT (project, pseudonym) DO NOTHING";

/// The entries of a batch that the table holds with another original.
const CONFLICTS: &str = "SELECT n.project, n.pseudonym
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS n(project, pseudonym, kind, value, issuer)
    JOIN pseudonyms p ON p.project = n.project AND p.pseudonym = n.pseudonym
    WHERE (p.kind, p.value, p.issuer) IS DISTINCT FROM (n.kind, n.value, n.issuer)";

const RESOLVE: &str = "SELECT kind, value, issuer FROM pseudonyms WHERE project = $1 AND pseudonym = $2";

/// How long a request waits for a connection before the map counts as unreachable.
const CONNECTION_WAIT: Duration = Duration::from_secs(3);

/// The longest a statement may run on the server.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A PostgreSQL error as the caller sees it: the database gone or refusing connections is
/// [`Unavailable`] (503 with Retry-After), anything else an error of the gateway.
fn classify(e: postgres::Error) -> anyhow::Error {
    let unavailable = match e.code() {
        None => true,
        Some(code) => {
            let class = &code.code()[..2];
            // 08: connection exception; 57: operator intervention (shutdown); 53: resources.
            matches!(class, "08" | "57" | "53")
        }
    };
    if unavailable {
        anyhow::Error::new(Unavailable(e.to_string()))
    } else {
        anyhow::anyhow!("PostgreSQL: {e}")
    }
}

fn connection(pool: &Pool) -> anyhow::Result<r2d2::PooledConnection<PostgresConnectionManager<NoTls>>> {
    pool.get().map_err(|e| anyhow::Error::new(Unavailable(e.to_string())))
}

/// Creates the schema or brings it to this gateway's version.
fn migrate(client: &mut postgres::Client) -> anyhow::Result<()> {
    let mut tx = client.transaction().map_err(classify)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]).map_err(classify)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS dicomweb_gateway_schema (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            version integer NOT NULL
        );
        INSERT INTO dicomweb_gateway_schema (version) VALUES (0) ON CONFLICT DO NOTHING",
    )
    .map_err(classify)?;
    let version: i32 = tx.query_one("SELECT version FROM dicomweb_gateway_schema", &[]).map_err(classify)?.get(0);
    let ours = MIGRATIONS.len();
    let version = usize::try_from(version).map_err(|_| anyhow::anyhow!("schema version {version} is not valid"))?;
    if version > ours {
        anyhow::bail!(
            "the pseudonym map's schema is at version {version}, newer than this gateway's ({ours}): upgrade the gateway"
        );
    }
    for step in &MIGRATIONS[version..] {
        tx.batch_execute(step).map_err(classify)?;
    }
    if version < ours {
        tx.execute("UPDATE dicomweb_gateway_schema SET version = $1", &[&(ours as i32)]).map_err(classify)?;
        tracing::info!(from = version, to = ours, "pseudonym map schema migrated");
    }
    tx.commit().map_err(classify)?;
    Ok(())
}

/// One entry to insert.
struct Row {
    project: String,
    pseudonym: String,
    original: Original,
}

/// The rows of one request and where its outcome goes.
struct Write {
    rows: Vec<Row>,
    done: oneshot::Sender<Result<(), Failure>>,
}

/// Why a write failed, sent to every request of the batch.
#[derive(Clone)]
enum Failure {
    Unavailable(String),
    Other(String),
}

impl Failure {
    fn of(e: anyhow::Error) -> Failure {
        match e.downcast::<Unavailable>() {
            Ok(Unavailable(why)) => Failure::Unavailable(why),
            Err(e) => Failure::Other(format!("{e:#}")),
        }
    }

    fn into_error(self) -> anyhow::Error {
        match self {
            Failure::Unavailable(why) => anyhow::Error::new(Unavailable(why)),
            Failure::Other(why) => anyhow::anyhow!(why),
        }
    }
}

/// The blocking client runs a small runtime per connection, which must not be started or
/// dropped on an async runtime's thread: connections are opened and closed on threads of their
/// own, and used from blocking tasks and the writer thread only.
pub struct Postgres {
    /// `None` once dropped.
    pool: Option<Pool>,
    shown: String,
    writer: Writer<Write>,
    recent: Recent,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgreSQL pseudonym store at {}", self.shown)
    }
}

impl Postgres {
    /// Connects, creates or migrates the schema and starts the writer (on a thread of its own,
    /// so that it may be called from async code).
    pub fn open(url: &ConnectionString) -> anyhow::Result<Postgres> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| Postgres::connect(url))
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("connecting panicked")))
        })
    }

    fn connect(url: &ConnectionString) -> anyhow::Result<Postgres> {
        let shown = url.to_string();
        let mut config =
            postgres::Config::from_str(url.as_str()).map_err(|e| anyhow::anyhow!("deid.store {shown}: {e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECTION_WAIT);
        }
        // A database that takes a lock and never answers must not hold a request for ever: the
        // server ends a statement after STATEMENT_TIMEOUT (unless the connection string sets
        // options of its own), and the request gets an error instead.
        if config.get_options().is_none() {
            config.options(&format!("-c statement_timeout={}", STATEMENT_TIMEOUT.as_millis()));
        }
        if config.get_application_name().is_none() {
            config.application_name("dicomweb-gateway");
        }
        // The server's notices ("relation already exists, skipping" at each start) are not news.
        config.notice_callback(|_| {});
        let pool = r2d2::Pool::builder()
            .max_size(16)
            .min_idle(Some(1))
            .connection_timeout(CONNECTION_WAIT)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build(PostgresConnectionManager::new(config, NoTls))
            .map_err(|e| anyhow::anyhow!("cannot connect to the pseudonym map at {shown}: {e}"))?;
        let mut client =
            pool.get().map_err(|e| anyhow::anyhow!("cannot connect to the pseudonym map at {shown}: {e}"))?;
        migrate(&mut client).map_err(|e| anyhow::anyhow!("the pseudonym map at {shown}: {e:#}"))?;
        drop(client);
        let writer_pool = pool.clone();
        let writer = Writer::start(move |receiver| write_batches(&writer_pool, receiver))?;
        Ok(Postgres { pool: Some(pool), shown, writer, recent: recent() })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // The writer first: it holds a clone of the pool.
        self.writer.stop();
        if let Some(pool) = self.pool.take() {
            let _ = std::thread::spawn(move || drop(pool)).join();
        }
    }
}

impl Postgres {
    fn connection(&self) -> anyhow::Result<r2d2::PooledConnection<PostgresConnectionManager<NoTls>>> {
        connection(self.pool.as_ref().ok_or_else(|| anyhow::anyhow!("the pseudonym store is closed"))?)
    }
}

impl PseudonymStore for Postgres {
    fn recording<'a>(
        &'a self,
        project: &'a str,
        entries: Vec<(String, Original)>,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let mut rows = Vec::new();
            for (pseudonym, original) in entries {
                if self.recent.get(&key(project, &pseudonym)).is_some_and(|known| *known == original) {
                    continue;
                }
                rows.push(Row { project: project.to_owned(), pseudonym, original });
            }
            if rows.is_empty() {
                return Ok(());
            }
            let (done, committed) = oneshot::channel();
            let known: Vec<(String, Arc<Original>)> =
                rows.iter().map(|r| (key(&r.project, &r.pseudonym), Arc::new(r.original.clone()))).collect();
            self.writer.send(Write { rows, done })?;
            committed
                .await
                .map_err(|_| anyhow::anyhow!("the pseudonym writer stopped"))?
                .map_err(Failure::into_error)?;
            // Known only once durable: a replica never resolves what the others cannot.
            for (key, original) in known {
                self.recent.insert(key, original);
            }
            Ok(())
        })
    }

    fn resolve(&self, project: &str, pseudonym: &str) -> anyhow::Result<Option<Original>> {
        let key = key(project, pseudonym);
        if let Some(known) = self.recent.get(&key) {
            return Ok(Some((*known).clone()));
        }
        let mut client = self.connection()?;
        let row = client
            .query_typed(RESOLVE, &[(&project, Type::TEXT), (&pseudonym, Type::TEXT)])
            .map_err(classify)?
            .into_iter()
            .next();
        let Some(row) = row else { return Ok(None) };
        let original = original(row.get(0), row.get(1), row.get(2))?;
        self.recent.insert(key, Arc::new(original.clone()));
        Ok(Some(original))
    }

    fn each(&self, visit: &mut dyn FnMut(&str, &str, Original) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let mut client = self.connection()?;
        let mut rows = client
            .query_raw(
                "SELECT project, pseudonym, kind, value, issuer FROM pseudonyms ORDER BY project, pseudonym",
                std::iter::empty::<&dyn ToSql>(),
            )
            .map_err(classify)?;
        while let Some(row) = rows.next().map_err(classify)? {
            let (project, pseudonym): (&str, &str) = (row.get(0), row.get(1));
            visit(project, pseudonym, original(row.get(2), row.get(3), row.get(4))?)?;
        }
        Ok(())
    }
}

fn original(kind: &str, value: String, issuer: Option<String>) -> anyhow::Result<Original> {
    let kind = Kind::parse(kind).ok_or_else(|| anyhow::anyhow!("the pseudonym map holds an unknown kind {kind:?}"))?;
    Ok(Original { kind, value, issuer })
}

fn write_batches(pool: &Pool, receiver: &mpsc::Receiver<Write>) {
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while let Ok(more) = receiver.try_recv() {
            batch.push(more);
            if batch.len() >= 256 {
                break;
            }
        }
        match commit(pool, &batch) {
            Ok(()) => batch.into_iter().for_each(|w| drop(w.done.send(Ok(())))),
            Err(Commit::Conflict(_)) if batch.len() > 1 => {
                // One request's entries conflict: the others are written on their own.
                for write in batch {
                    let outcome = commit(pool, std::slice::from_ref(&write));
                    let _ = write.done.send(outcome.map_err(Commit::failure));
                }
            }
            Err(e) => {
                let failure = e.failure();
                batch.into_iter().for_each(|w| drop(w.done.send(Err(failure.clone()))));
            }
        }
    }
}

enum Commit {
    /// A pseudonym already stands for another original (names the pseudonym and project).
    Conflict(String),
    Failed(anyhow::Error),
}

impl Commit {
    fn failure(self) -> Failure {
        match self {
            Commit::Conflict(which) => Failure::Other(format!(
                "pseudonym {which} already stands for another original in the map: not overwritten (two gateways \
                 with different secrets sharing one map?)"
            )),
            Commit::Failed(e) => Failure::of(e),
        }
    }
}

fn commit(pool: &Pool, batch: &[Write]) -> Result<(), Commit> {
    let rows = batch.iter().flat_map(|w| &w.rows);
    let projects: Vec<&str> = rows.clone().map(|r| r.project.as_str()).collect();
    let pseudonyms: Vec<&str> = rows.clone().map(|r| r.pseudonym.as_str()).collect();
    let kinds: Vec<&str> = rows.clone().map(|r| r.original.kind.as_str()).collect();
    let values: Vec<&str> = rows.clone().map(|r| r.original.value.as_str()).collect();
    let issuers: Vec<Option<&str>> = rows.map(|r| r.original.issuer.as_deref()).collect();
    let params: [&(dyn ToSql + Sync); 5] = [&projects, &pseudonyms, &kinds, &values, &issuers];
    let failed = |e: postgres::Error| Commit::Failed(classify(e));
    let mut client = connection(pool).map_err(Commit::Failed)?;
    let mut tx = client.transaction().map_err(failed)?;
    tx.execute(INSERT, &params).map_err(failed)?;
    let conflicts = tx.query(CONFLICTS, &params).map_err(failed)?;
    if let Some(first) = conflicts.first() {
        let (project, pseudonym): (&str, &str) = (first.get(0), first.get(1));
        tracing::error!(project, pseudonym, "a pseudonym already stands for another original: not overwritten");
        return Err(Commit::Conflict(format!("{pseudonym} of project {project}")));
    }
    tx.commit().map_err(failed)
}
