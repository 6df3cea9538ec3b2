//! `ADD https://...`: what identifies a remote file before it is downloaded (its
//! validators), and the download itself, streamed to disk with its sha256.

use std::path::Path;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

/// A download that failed.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {reason}")]
pub struct HttpError {
    /// The URL.
    pub url: String,
    /// What went wrong, and what to do.
    pub reason: String,
}

fn err(url: &str, reason: impl Into<String>) -> HttpError {
    HttpError {
        url: url.to_owned(),
        reason: reason.into(),
    }
}

fn client(url: &str) -> Result<reqwest::Client, HttpError> {
    // One process-wide provider; a second install is refused and harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| err(url, e.to_string()))
}

/// What the server says identifies the file's current version: `ETag` and
/// `Last-Modified`, when it sends them.
pub async fn validators(url: &str) -> Result<Option<String>, HttpError> {
    let response = client(url)?
        .head(url)
        .send()
        .await
        .map_err(|e| err(url, format!("{e}; check the URL and the network")))?;
    if !response.status().is_success() {
        // Some servers refuse HEAD; the download will tell the real story.
        return Ok(None);
    }
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (etag, modified) = (header("etag"), header("last-modified"));
    Ok((etag.is_some() || modified.is_some()).then(|| {
        format!(
            "etag={};last-modified={}",
            etag.unwrap_or_default(),
            modified.unwrap_or_default()
        )
    }))
}

/// A finished download.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// `sha256:HEX` of the bytes.
    pub digest: String,
    /// `Last-Modified`, in seconds since the epoch (0 when absent, as BuildKit does).
    pub modified: i64,
}

/// Downloads `url` into `path` (mode 0600), streaming.
pub async fn fetch(url: &str, path: &Path) -> Result<Fetched, HttpError> {
    let mut response = client(url)?
        .get(url)
        .send()
        .await
        .map_err(|e| err(url, format!("{e}; check the URL and the network")))?;
    if !response.status().is_success() {
        return Err(err(
            url,
            format!("the server answered {}", response.status()),
        ));
    }
    let modified = response
        .headers()
        .get("last-modified")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
        .unwrap_or(0);
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .await
        .map_err(|e| err(url, format!("write {}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| err(url, format!("the download broke off: {e}")))?
    {
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| err(url, format!("write {}: {e}", path.display())))?;
    }
    file.flush()
        .await
        .map_err(|e| err(url, format!("write {}: {e}", path.display())))?;
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    Ok(Fetched { digest, modified })
}

/// Seconds since the epoch of an HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`).
pub fn parse_http_date(text: &str) -> Option<i64> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, time, _] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as i64
        + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    // The server chose these numbers: keep them where the arithmetic below is sound.
    if !(1..=31).contains(&day) || !(1970..=9999).contains(&year) {
        return None;
    }
    let hms: Vec<i64> = time.split(':').filter_map(|p| p.parse().ok()).collect();
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    if !(0..24).contains(h) || !(0..60).contains(m) || !(0..61).contains(s) {
        return None;
    }
    Some(kiln_image::config::unix_seconds(
        year, month, day, *h, *m, *s,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(1_445_412_480)
        );
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(
            parse_http_date("Mon, 01 Jan 9999999999999999 00:00:00 GMT"),
            None
        );
    }
}
