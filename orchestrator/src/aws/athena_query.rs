//! One ad-hoc Athena query and its result rows (`cartflow sql --backend aws`, the web UI's
//! query page): StartQueryExecution, poll GetQueryExecution until it ends (the shared
//! [`watch`] loop, with short delays: a person is waiting), then GetQueryResults page by page
//! until `limit` rows are read (one row more says that the result was cut).
//!
//! The caller checks that the text is one read-only SELECT before it comes here: Athena runs
//! whatever it is given. Each call starts a new query (no ClientRequestToken: the same text run
//! twice is two queries, as in the Athena console). Results are what Athena returns: every value
//! as text (`VarCharValue`), a NULL as a datum without a value.

use std::time::Duration;

use aws_sdk_athena::types::{QueryExecutionContext, ResultConfiguration};

use crate::aws::{AwsEnv, AwsError, Backoff, Phase, WatchEnd, watch};

/// Rows of one GetQueryResults page (the API's largest).
const PAGE: usize = 1000;

/// A finished query's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The query execution id.
    pub query_id: String,
    /// The column names.
    pub columns: Vec<String>,
    /// At most `limit` rows; `None` for NULL.
    pub rows: Vec<Vec<Option<String>>>,
    /// Whether the result had more than `limit` rows.
    pub truncated: bool,
    /// `Statistics.DataScannedInBytes` (what Athena bills).
    pub bytes_scanned: u64,
}

/// Why a query gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// The query ended FAILED or CANCELLED.
    #[error("Athena query {query_id} {state}: {reason}")]
    Ended {
        /// The query execution id.
        query_id: String,
        /// `failed` or `was cancelled`.
        state: &'static str,
        /// Athena's StateChangeReason.
        reason: String,
    },
    /// Cancelled here (Ctrl-C): the query was stopped.
    #[error("cancelled; Athena query {0} was stopped")]
    Cancelled(String),
    /// Polling kept failing.
    #[error("lost track of Athena query {query_id}: {message}")]
    Lost {
        /// The query execution id.
        query_id: String,
        /// The last error.
        message: String,
    },
}

/// Runs `sql` on Athena in `database` (where unqualified table names resolve) and reads at most
/// `limit` rows of its result. `log` gets the query's state changes.
pub async fn run(
    aws: &AwsEnv,
    sql: &str,
    database: &str,
    limit: usize,
    log: &(dyn Fn(&str) + Sync),
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<Answer, QueryError> {
    let athena = &aws.clients.athena;
    let mut req = athena
        .start_query_execution()
        .query_string(sql)
        .query_execution_context(QueryExecutionContext::builder().database(database).build())
        .work_group(&aws.settings.athena_workgroup);
    if let Some(out) = &aws.settings.athena_output {
        req = req.result_configuration(ResultConfiguration::builder().output_location(out).build());
    }
    let started = req.send().await.map_err(|e| AwsError::new("athena:StartQueryExecution", "ad-hoc query", e))?;
    let id = started.query_execution_id().unwrap_or_default().to_string();
    log(&format!("started Athena query {id}"));
    let scanned = std::sync::Mutex::new(0u64);
    let probe = || async {
        let out = athena
            .get_query_execution()
            .query_execution_id(&id)
            .send()
            .await
            .map_err(|e| AwsError::new("athena:GetQueryExecution", &id, e))?;
        let q = out.query_execution();
        let status = q.and_then(|q| q.status());
        let state = status.and_then(|s| s.state()).map(|s| s.as_str()).unwrap_or("QUEUED");
        let bytes = q.and_then(|q| q.statistics()).and_then(|s| s.data_scanned_in_bytes()).unwrap_or(0);
        *scanned.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = u64::try_from(bytes).unwrap_or(0);
        Ok(Phase::athena_query(state, status.and_then(|s| s.state_change_reason())))
    };
    // Interactive: first look after 250 ms, then at most every 2 s (or `max_poll`, if shorter).
    let backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(2).min(aws.settings.max_poll.0));
    let what = format!("Athena query {id}");
    match watch(&what, backoff, log, cancel, probe).await {
        Ok(Phase::Succeeded) => {}
        Ok(Phase::Failed(reason)) => return Err(QueryError::Ended { query_id: id, state: "failed", reason }),
        Ok(Phase::Stopped(reason)) => {
            return Err(QueryError::Ended { query_id: id, state: "was cancelled", reason });
        }
        Ok(Phase::Running(_)) => unreachable!("watch returns terminal phases only"),
        Err(WatchEnd::Cancelled) => {
            let _ = athena.stop_query_execution().query_execution_id(&id).send().await;
            return Err(QueryError::Cancelled(id));
        }
        Err(WatchEnd::Unreachable(message)) => return Err(QueryError::Lost { query_id: id, message }),
    }
    let bytes_scanned = scanned.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut pages = Pages::new(limit);
    let mut token: Option<String> = None;
    loop {
        let out = athena
            .get_query_results()
            .query_execution_id(&id)
            .max_results(pages.page_size())
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| AwsError::new("athena:GetQueryResults", &id, e))?;
        let Some(rs) = out.result_set() else { break };
        if pages.columns.is_none() {
            let names = rs.result_set_metadata().map(|m| m.column_info().iter().map(|c| c.name().to_string()));
            pages.columns = Some(names.map(Iterator::collect).unwrap_or_default());
        }
        let rows = rs
            .rows()
            .iter()
            .map(|r| r.data().iter().map(|d| d.var_char_value().map(str::to_string)).collect())
            .collect();
        let more = pages.take(rows);
        token = out.next_token().map(str::to_string);
        if !more || token.is_none() {
            break;
        }
    }
    Ok(Answer {
        query_id: id,
        columns: pages.columns.unwrap_or_default(),
        rows: pages.rows,
        truncated: pages.truncated,
        bytes_scanned,
    })
}

/// The rows of GetQueryResults pages, as they come: the first row of the first page is the
/// header (Athena repeats the column names there for a SELECT) when it equals the column
/// names; reading stops once `limit` rows and one more are seen.
#[derive(Debug)]
struct Pages {
    limit: usize,
    columns: Option<Vec<String>>,
    rows: Vec<Vec<Option<String>>>,
    first: bool,
    truncated: bool,
}

impl Pages {
    fn new(limit: usize) -> Pages {
        Pages { limit, columns: None, rows: Vec::new(), first: true, truncated: false }
    }

    /// MaxResults of the next page: what is still wanted (with the header and the one row
    /// that says "more"), at most a full page.
    fn page_size(&self) -> i32 {
        let want = (self.limit - self.rows.len()) + 1 + usize::from(self.first);
        i32::try_from(want.min(PAGE)).unwrap_or(1000)
    }

    /// Takes one page; whether another page is wanted.
    fn take(&mut self, page: Vec<Vec<Option<String>>>) -> bool {
        let mut page = page.into_iter().peekable();
        if std::mem::take(&mut self.first) {
            let columns = self.columns.as_deref().unwrap_or_default();
            let header = page.peek().is_some_and(|r| {
                r.len() == columns.len() && r.iter().zip(columns).all(|(v, c)| v.as_deref() == Some(c.as_str()))
            });
            if header {
                page.next();
            }
        }
        for row in page {
            if self.rows.len() == self.limit {
                self.truncated = true;
                return false;
            }
            self.rows.push(row);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(values: &[&[Option<&str>]]) -> Vec<Vec<Option<String>>> {
        values.iter().map(|r| r.iter().map(|v| v.map(str::to_string)).collect()).collect()
    }

    #[test]
    fn the_header_row_is_skipped_once_and_reading_stops_one_row_past_the_limit() {
        let mut p = Pages::new(3);
        p.columns = Some(vec!["brand".into(), "n".into()]);
        assert_eq!(p.page_size(), 5, "3 rows, the header and one more");
        let more = p.take(page(&[&[Some("brand"), Some("n")], &[Some("acme"), Some("2")], &[None, Some("1")]]));
        assert!(more);
        assert_eq!(p.page_size(), 2);
        // A later page that starts like a header is data.
        let more = p.take(page(&[&[Some("brand"), Some("n")], &[Some("zeta"), Some("9")]]));
        assert!(!more && p.truncated);
        assert_eq!(p.rows, page(&[&[Some("acme"), Some("2")], &[None, Some("1")], &[Some("brand"), Some("n")]]));
    }

    #[test]
    fn a_result_of_exactly_the_limit_is_not_cut_and_pages_are_at_most_a_thousand_rows() {
        let mut p = Pages::new(2);
        p.columns = Some(vec!["x".into()]);
        assert!(p.take(page(&[&[Some("x")], &[Some("1")], &[Some("2")]])));
        assert!(!p.truncated && p.rows.len() == 2);
        let mut big = Pages::new(5000);
        big.columns = Some(vec!["x".into()]);
        assert_eq!(big.page_size(), 1000);
        // No header (the first row differs from the names): every row is data.
        let mut q = Pages::new(10);
        q.columns = Some(vec!["x".into()]);
        q.take(page(&[&[Some("1")], &[None]]));
        assert_eq!(q.rows, page(&[&[Some("1")], &[None]]));
    }
}
