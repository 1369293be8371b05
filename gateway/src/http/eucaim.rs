//! The EUCAIM data holder's HTTP resources (docs/EUCAIM.md): the federated-search provider
//! endpoint EUCAIM's Focus POSTs each count query to (`eucaim.path`, its own `Authorization:
//! Secret ...`), and `GET /datasets`, the published datasets for people.
//!
//! The provider answers as EUCAIM's reference provider does: 404 when no secret is configured,
//! 401 for another Authorization, 400 for a body that is not JSON (or not sent as JSON), 422 for
//! JSON that is not a query, 413 past 1 MiB, else 200 with the collections object.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use crate::core::eucaim::query::Query;
use crate::core::eucaim::{Admitted, Datasets};
use crate::core::Error;
use crate::http::ledger::Ledger;
use crate::state::Gateway;

/// The largest query body read: the explorer's are a few kilobytes.
const MAX_QUERY: usize = 1 << 20;

/// The subject the audit names for the federated search (no end user reaches the provider).
const SEARCH_SUBJECT: &str = "eucaim-federated-search";

fn datasets(gateway: &Gateway) -> Result<&Arc<Datasets>, Error> {
    gateway.datasets.as_ref().ok_or_else(|| Error::NotFound("no dataset is published here".into()))
}

/// `POST {eucaim.path}`: a count query, answered from the datasets' index.
pub(crate) async fn search(
    State(gateway): State<Arc<Gateway>>,
    Extension(ledger): Extension<Arc<Ledger>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let datasets = datasets(&gateway)?.clone();
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match datasets.admit(authorization) {
        Admitted::Off => return Err(Error::NotFound("the federated search is not offered here".into())),
        Admitted::No => {
            return Err(Error::Unauthorized(
                "the federated search takes its own secret (Authorization: Secret ...)".into(),
            ))
        }
        Admitted::Yes => ledger.identify(SEARCH_SUBJECT, None),
    }
    let json_sent = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")));
    if !json_sent {
        return Err(Error::BadRequest("a federated search query is sent as application/json".into()));
    }
    let bytes = axum::body::to_bytes(body, MAX_QUERY)
        .await
        .map_err(|_| Error::PayloadTooLarge(format!("a federated search query is at most {MAX_QUERY} bytes")))?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::BadRequest(format!("the body is not JSON: {e}")))?;
    let query = Query::parse(&value).map_err(|e| Error::Unprocessable(e.to_string()))?;
    let id = query.id.clone();
    let (answer, counted) = tokio::task::spawn_blocking(move || datasets.search(&query))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    ledger.note_search(json!({ "id": id, "datasets": counted }));
    // The answer is an object whose first `{` Focus extends with its provider's name.
    Ok(Json(answer).into_response())
}

/// `GET /datasets/{id}/catalogue`: the dataset's EUCAIM catalogue record, as Turtle when the
/// client asks for `text/turtle`, else as JSON-LD.
pub(crate) async fn catalogue(
    State(gateway): State<Arc<Gateway>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let root = crate::describe::gateway_root(&gateway.config);
    let published = datasets(&gateway)?.clone();
    // A pass over the dataset's studies when the index changed since the last one.
    let record = tokio::task::spawn_blocking(move || published.record(&id, &root))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .ok_or_else(|| Error::NotFound("no dataset of this id is published here".into()))?
        .map_err(|lacks| {
            Error::NotFound(format!("the dataset has no catalogue record without: {}", lacks.join("; ")))
        })?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("text/turtle") {
        return Ok(([(header::CONTENT_TYPE, "text/turtle; charset=utf-8")], record.turtle()).into_response());
    }
    let body = serde_json::to_vec(&record.json_ld()).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/ld+json")], body).into_response())
}

/// `GET /datasets`: the published datasets, their counts (after the privacy of counts) and
/// what they hold.
pub(crate) async fn view(State(gateway): State<Arc<Gateway>>) -> Result<Response, Error> {
    let published = datasets(&gateway)?.clone();
    // Counts and descriptions: passes over every dataset's studies.
    let view =
        tokio::task::spawn_blocking(move || published.view()).await.map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Json(view).into_response())
}
