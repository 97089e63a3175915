//! The JSON API (docs/web.md), behind the same login as the page (or an
//! API token): status, job history, run now, cancel, and the live event
//! stream the page's progress bars follow.

use super::pages::blocking;
use super::{Principal, WebState};
use crate::daemon::control::RunAnswer;
use crate::daemon::history::Run;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use axum::{Extension, extract::Request};
use futures_util::stream::Stream;
use serde::Serialize;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

type St = State<Arc<WebState>>;

/// How often the event stream sends the running jobs' figures.
pub const EVENT_EVERY: Duration = Duration::from_millis(500);
/// Finished runs sent with every event, so a page sees how its job ended.
const FINISHED_IN_EVENTS: i64 = 10;

#[derive(Serialize)]
struct JobStatus {
    name: String,
    kind: &'static str,
    running: bool,
    next_run: Option<String>,
    last: Option<Run>,
}

/// Everything the overview shows: hosts with their copies per tier,
/// repositories, drives, jobs and what runs now.
pub async fn status(State(st): St, Extension(p): Extension<Principal>) -> Response {
    let st2 = st.clone();
    let (snap, runs) = blocking(move || {
        let runs = st2
            .history()
            .and_then(|h| h.recent(None, 500))
            .unwrap_or_default();
        (st2.snapshot(), runs)
    })
    .await;
    let next = st.control.next_runs();
    let jobs: Vec<JobStatus> = st
        .cfg
        .jobs
        .iter()
        .map(|j| j.get_ref())
        .map(|j| JobStatus {
            name: j.name.clone(),
            kind: j.kind.name(),
            running: st.control.is_running(&j.name),
            next_run: next.get(&j.name).and_then(|t| t.map(|t| t.to_rfc3339())),
            last: runs.iter().find(|r| r.job == j.name).cloned().map(|mut r| {
                r.log.clear();
                r
            }),
        })
        .collect();
    Json(serde_json::json!({
        "user": p.user,
        "overview": &*snap,
        "jobs": jobs,
        "running": st.control.live(),
    }))
    .into_response()
}

/// Finished and running runs, newest first: `?job=NAME&limit=N`.
pub async fn jobs(State(st): St, Query(q): Query<HashMap<String, String>>) -> Response {
    let job = q.get("job").cloned();
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<i64>().ok())
        .unwrap_or(50)
        .clamp(1, 500);
    let runs = blocking(move || {
        st.history()
            .and_then(|h| h.recent(job.as_deref(), limit))
            .map(|runs| {
                runs.into_iter()
                    .map(|mut r| {
                        r.log.clear();
                        r
                    })
                    .collect::<Vec<_>>()
            })
    })
    .await;
    match runs {
        Ok(r) => Json(r).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

/// One run with its log.
pub async fn run(State(st): St, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "no such run"})),
        )
            .into_response();
    };
    match blocking(move || st.history().and_then(|h| h.get(id))).await {
        Ok(Some(r)) => Json(r).into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": format!("no run #{id}")})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

#[derive(serde::Deserialize, Default)]
struct RunRequest {
    target: Option<String>,
}

/// Starts a job now: 202 when started, 409 when it already runs.
pub async fn run_job(State(st): St, Path(name): Path<String>, req: Request) -> Response {
    let body = axum::body::to_bytes(req.into_body(), 16 * 1024)
        .await
        .unwrap_or_default();
    // JSON or a form; an empty body runs every target.
    let r: RunRequest = serde_json::from_slice(&body)
        .or_else(|_| serde_urlencoded::from_bytes(&body))
        .unwrap_or_default();
    let target = r.target.filter(|t| !t.is_empty());
    let n2 = name.clone();
    let a = blocking(move || st.control.run(&n2, target.as_deref())).await;
    let status = match a {
        RunAnswer::Started => StatusCode::ACCEPTED,
        RunAnswer::AlreadyRunning => StatusCode::CONFLICT,
        RunAnswer::NoSuchJob | RunAnswer::NoSuchTarget => StatusCode::NOT_FOUND,
        RunAnswer::Stopping | RunAnswer::NoAnswer => StatusCode::SERVICE_UNAVAILABLE,
    };
    (
        status,
        Json(serde_json::json!({"answer": a, "message": a.message(&name)})),
    )
        .into_response()
}

pub async fn cancel_job(State(st): St, Path(name): Path<String>) -> Response {
    if st.cfg.job(&name).is_none() {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": format!("no job `{name}`")})),
        )
            .into_response();
    }
    if st.control.cancel(&name) {
        (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"message": format!("{name}: stopping")})),
        )
            .into_response()
    } else {
        (
            StatusCode::CONFLICT,
            Json(serde_json::json!({"message": format!("{name}: not running")})),
        )
            .into_response()
    }
}

#[derive(Serialize)]
struct Finished {
    id: i64,
    job: String,
    outcome: String,
    summary: String,
    ended: Option<String>,
}

/// `jobs` events every `EVENT_EVERY`: `{"running": [...], "finished":
/// [...]}`; finished runs are read again only when one ended.
pub async fn events(State(st): St) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let state = (st, u64::MAX, Vec::<Finished>::new(), true);
    let stream =
        futures_util::stream::unfold(state, |(st, seen, mut finished, first)| async move {
            if !first {
                tokio::time::sleep(EVENT_EVERY).await;
            }
            let now = st.control.finished_count();
            if now != seen {
                let st2 = st.clone();
                finished = blocking(move || {
                    st2.history()
                        .and_then(|h| h.recent(None, FINISHED_IN_EVENTS))
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|r| r.outcome != "running")
                        .map(|r| Finished {
                            id: r.id,
                            job: r.job,
                            outcome: r.outcome,
                            summary: r.summary,
                            ended: r.ended,
                        })
                        .collect()
                })
                .await;
            }
            let data = serde_json::json!({
                "running": st.control.live(),
                "finished": &finished,
            });
            let ev = Event::default().event("jobs").data(data.to_string());
            Some((Ok(ev), (st, now, finished, false)))
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
