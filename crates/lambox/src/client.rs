//! `lambox invoke`, `lambox functions`, `lambox logs`, `lambox events`: thin HTTP clients of `lambox serve`'s
//! API (the Lambda API and the CloudWatch Logs subset), so they work against any lambox serve
//! the endpoint names. Requests are SigV4-signed when `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY` are set (region from `AWS_REGION`/`AWS_DEFAULT_REGION`, default
//! us-east-1).

use std::collections::HashSet;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

/// Lambda's header names the client reads and sends.
const INVOCATION_TYPE: &str = "x-amz-invocation-type";
const LOG_TYPE: &str = "x-amz-log-type";
const LOG_RESULT: &str = "x-amz-log-result";
const FUNCTION_ERROR: &str = "x-amz-function-error";
const ERROR_TYPE: &str = "x-amzn-errortype";
const LOGS_CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// How often `lambox logs --follow` asks for new events.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct EndpointArgs {
    /// URL of lambox serve
    #[arg(long, env = "LAMBOX_ENDPOINT", default_value = "http://127.0.0.1:4566")]
    endpoint: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "verbatim")]
enum InvocationType {
    RequestResponse,
    Event,
    DryRun,
}

#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// Function name or ARN (NAME:QUALIFIER also works)
    function: String,
    /// Version or alias
    #[arg(long)]
    qualifier: Option<String>,
    /// The event: JSON text, @FILE, or - for standard input [default: no payload]
    #[arg(long)]
    payload: Option<String>,
    #[arg(long, value_enum, default_value = "RequestResponse")]
    invocation_type: InvocationType,
    /// Print the invoke's log tail (last 4 KB) to standard error
    #[arg(long)]
    log: bool,
    #[command(flatten)]
    endpoint: EndpointArgs,
}

#[derive(Debug, Args)]
pub struct FunctionsArgs {
    /// JSON (one array of FunctionConfiguration) instead of a table
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    endpoint: EndpointArgs,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Function name
    function: String,
    /// Keep printing new events as they come
    #[arg(long, short)]
    follow: bool,
    /// Only events of the last DURATION (30s, 10m, 2h, 1d), or `all`
    #[arg(long, default_value = "10m")]
    since: String,
    #[command(flatten)]
    endpoint: EndpointArgs,
}

/// An HTTP client of one lambox serve.
struct Client {
    endpoint: String,
    http: reqwest::Client,
    credentials: Option<(String, String, Option<String>)>,
    region: String,
    rt: tokio::runtime::Runtime,
}

/// An answer: status, headers, body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The AWS error of a 4xx/5xx answer as one line: `TYPE: message`.
    fn error(&self) -> anyhow::Error {
        let body: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        let kind = self
            .header(ERROR_TYPE)
            .map(|t| t.split(':').next().unwrap_or(t).to_owned())
            .or_else(|| {
                body.get("__type")
                    .or_else(|| body.get("Type"))
                    .and_then(Value::as_str)
                    .map(|t| t.rsplit('#').next().unwrap_or(t).to_owned())
            })
            .unwrap_or_else(|| format!("HTTP {}", self.status));
        let message = body
            .get("message")
            .or_else(|| body.get("Message"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_owned());
        anyhow!("{kind}: {}", message.replace('\n', " "))
    }

    fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).context("the answer is not JSON")
    }
}

impl Client {
    fn new(endpoint: &EndpointArgs) -> Result<Client> {
        let url = reqwest::Url::parse(&endpoint.endpoint)
            .with_context(|| format!("endpoint {:?} is not a URL", endpoint.endpoint))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            bail!("endpoint {} is not an http:// URL", endpoint.endpoint);
        }
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let credentials = match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => Some((id, secret, var("AWS_SESSION_TOKEN"))),
            _ => None,
        };
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_owned());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start the async runtime")?;
        let http = reqwest::Client::builder()
            .build()
            .context("build the HTTP client")?;
        Ok(Client {
            endpoint: endpoint.endpoint.trim_end_matches('/').to_owned(),
            http,
            credentials,
            region,
            rt,
        })
    }

    /// Sends one request (signed for `service` when credentials are set).
    fn send(
        &self,
        service: &str,
        method: reqwest::Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Answer> {
        let url = format!("{}{path_and_query}", self.endpoint);
        let mut all: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if let Some((id, secret, token)) = &self.credentials {
            all.extend(sign(
                service,
                &self.region,
                (id, secret, token.as_deref()),
                method.as_str(),
                &url,
                &all,
                &body,
            )?);
        }
        let mut req = self.http.request(method, &url).body(body);
        for (k, v) in &all {
            req = req.header(k, v);
        }
        self.rt.block_on(async {
            let resp = req.send().await.map_err(|e| self.unreachable(e))?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp
                .bytes()
                .await
                .map_err(|e| self.unreachable(e))?
                .to_vec();
            Ok(Answer {
                status,
                headers,
                body,
            })
        })
    }

    /// "cannot reach lambox serve at URL: connection refused" (the innermost cause).
    fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        let mut cause: &dyn std::error::Error = &e;
        let mut reason = e.to_string();
        while let Some(next) = cause.source() {
            cause = next;
            reason = match next.downcast_ref::<std::io::Error>() {
                Some(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                    "connection refused".to_owned()
                }
                _ => next.to_string(),
            };
        }
        anyhow!("cannot reach lambox serve at {}: {reason}", self.endpoint)
    }

    /// A CloudWatch Logs operation; `Ok(None)` for ResourceNotFoundException.
    fn logs(&self, op: &str, input: &Value) -> Result<Option<Value>> {
        let target = format!("Logs_20140328.{op}");
        let a = self.send(
            "logs",
            reqwest::Method::POST,
            "/",
            &[
                ("content-type", LOGS_CONTENT_TYPE),
                ("x-amz-target", &target),
            ],
            input.to_string().into_bytes(),
        )?;
        if a.status == 200 {
            return a.json().map(Some);
        }
        let e = a.error();
        if e.to_string().starts_with("ResourceNotFoundException") {
            return Ok(None);
        }
        Err(e)
    }
}

/// The SigV4 headers of a request (`authorization`, `x-amz-date`, …).
fn sign(
    service: &str,
    region: &str,
    (id, secret, token): (&str, &str, Option<&str>),
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Vec<(String, String)>> {
    use aws_sigv4::http_request::{
        sign as sigv4, SignableBody, SignableRequest, SigningParams, SigningSettings,
    };
    let identity = aws_credential_types::Credentials::new(
        id,
        secret,
        token.map(str::to_owned),
        None,
        "environment",
    )
    .into();
    let params: SigningParams = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .context("SigV4 parameters")?
        .into();
    let signable = SignableRequest::new(
        method,
        url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .context("SigV4: request")?;
    let (instructions, _) = sigv4(signable, &params)
        .context("SigV4: sign")?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// `/`-free path segment: function names and ARNs only hold `[A-Za-z0-9-_:.$]`.
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn read_payload(arg: Option<&str>) -> Result<Vec<u8>> {
    Ok(match arg {
        None => Vec::new(),
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("read the payload from standard input")?;
            buf
        }
        Some(a) => match a.strip_prefix('@') {
            Some(path) => std::fs::read(PathBuf::from(path))
                .with_context(|| format!("read payload file {path}"))?,
            None => a.as_bytes().to_vec(),
        },
    })
}

/// `lambox events` (lambox's own `GET /lambox/v1/functions/NAME/events`).
pub fn events(args: crate::serve::EventsArgs) -> Result<ExitCode> {
    let client = Client::new(&args.endpoint)?;
    let mut path = format!("/lambox/v1/functions/{}/events", segment(&args.function));
    if args.failed {
        path.push_str("?Status=failed");
    }
    let a = client.send("lambda", reqwest::Method::GET, &path, &[], Vec::new())?;
    if a.status != 200 {
        return Err(a.error().context(format!("events of {}", args.function)));
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Events {
        events: Vec<lambox_api::state::EventSummary>,
    }
    let page: Events = serde_json::from_slice(&a.body).context("the answer is not JSON")?;
    crate::serve::print_events(&page.events, args.json)
}

/// `lambox invoke`.
pub fn invoke(args: InvokeArgs) -> Result<ExitCode> {
    let client = Client::new(&args.endpoint)?;
    let payload = read_payload(args.payload.as_deref())?;
    let mut path = format!(
        "/2015-03-31/functions/{}/invocations",
        segment(&args.function)
    );
    if let Some(q) = &args.qualifier {
        path.push_str(&format!("?Qualifier={}", segment(q)));
    }
    let kind = match args.invocation_type {
        InvocationType::RequestResponse => "RequestResponse",
        InvocationType::Event => "Event",
        InvocationType::DryRun => "DryRun",
    };
    let mut headers = vec![(INVOCATION_TYPE, kind)];
    if args.log {
        headers.push((LOG_TYPE, "Tail"));
    }
    let a = client.send("lambda", reqwest::Method::POST, &path, &headers, payload)?;
    if a.status >= 300 {
        return Err(a.error().context(format!("invoke {}", args.function)));
    }
    if let Some(tail) = a.header(LOG_RESULT) {
        let text = base64::engine::general_purpose::STANDARD
            .decode(tail)
            .context("X-Amz-Log-Result is not base64")?;
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(&text);
        let _ = err.flush();
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&a.body).context("write the response")?;
    if !a.body.is_empty() && !a.body.ends_with(b"\n") && std::io::stdout().is_terminal() {
        out.write_all(b"\n").context("write the response")?;
    }
    out.flush().context("write the response")?;
    if let Some(kind) = a.header(FUNCTION_ERROR) {
        let body: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
        let error_type = body
            .get("errorType")
            .and_then(Value::as_str)
            .unwrap_or(kind);
        let message = body
            .get("errorMessage")
            .and_then(Value::as_str)
            .unwrap_or("");
        eprintln!(
            "lambox: error: function {} failed: {error_type}: {}",
            args.function,
            message.replace('\n', " ")
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `lambox functions`.
pub fn functions(args: FunctionsArgs) -> Result<ExitCode> {
    let client = Client::new(&args.endpoint)?;
    let mut all: Vec<Value> = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let path = match &marker {
            Some(m) => format!("/2015-03-31/functions/?Marker={}", segment(m)),
            None => "/2015-03-31/functions/".to_owned(),
        };
        let a = client.send("lambda", reqwest::Method::GET, &path, &[], Vec::new())?;
        if a.status != 200 {
            return Err(a.error().context("list functions"));
        }
        let page = a.json()?;
        if let Some(fs) = page.get("Functions").and_then(Value::as_array) {
            all.extend(fs.iter().cloned());
        }
        match page.get("NextMarker").and_then(Value::as_str) {
            Some(m) if !m.is_empty() => marker = Some(m.to_owned()),
            _ => break,
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s = |f: &Value, k: &str| match f.get(k) {
        Some(Value::String(v)) => v.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(v) => v.to_string(),
    };
    let mut rows = vec![[
        "NAME".to_owned(),
        "STATE".to_owned(),
        "MEMORY".to_owned(),
        "TIMEOUT".to_owned(),
        "IMAGE".to_owned(),
        "LAST MODIFIED".to_owned(),
    ]];
    for f in &all {
        let name = s(f, "FunctionName");
        // ListFunctions does not carry the image: GetFunction's Code does.
        let a = client.send(
            "lambda",
            reqwest::Method::GET,
            &format!("/2015-03-31/functions/{}", segment(&name)),
            &[],
            Vec::new(),
        )?;
        let image = if a.status == 200 {
            a.json()?
                .pointer("/Code/ImageUri")
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_owned()
        } else {
            "-".to_owned()
        };
        rows.push([
            name,
            s(f, "State"),
            format!("{} MB", s(f, "MemorySize")),
            format!("{} s", s(f, "Timeout")),
            image,
            s(f, "LastModified"),
        ]);
    }
    let mut widths = [0usize; 6];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

/// `30s`, `10m`, `2h`, `1d`, `1w` → milliseconds; `all` → None.
fn parse_since(s: &str) -> Result<Option<i64>> {
    if s == "all" {
        return Ok(None);
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| anyhow!("--since {s:?}: a number and a unit (s, m, h, d, w), or all"))?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| anyhow!("--since {s:?}: a number and a unit (s, m, h, d, w), or all"))?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => bail!("--since {s:?}: the unit is one of s, m, h, d, w"),
    };
    Ok(Some(n.saturating_mul(ms)))
}

/// `lambox logs`: FilterLogEvents pages, then (`--follow`) polling from the newest timestamp
/// seen, skipping events already printed (as `aws logs tail --follow` does).
pub fn logs(args: LogsArgs) -> Result<ExitCode> {
    let client = Client::new(&args.endpoint)?;
    let group = format!("{}{}", lambox_api::logs::GROUP_PREFIX, args.function);
    let mut start = parse_since(&args.since)?.map(|d| lambox_api::logs::now_ms() - d);
    let mut seen: HashSet<String> = HashSet::new();
    let mut out = std::io::stdout().lock();
    loop {
        let mut token: Option<String> = None;
        let mut newest = start;
        let mut newest_ids: HashSet<String> = HashSet::new();
        loop {
            let mut input = json!({ "logGroupName": group, "interleaved": true });
            if let Some(s) = start {
                input["startTime"] = json!(s);
            }
            if let Some(t) = &token {
                input["nextToken"] = json!(t);
            }
            let Some(page) = client.logs("FilterLogEvents", &input)? else {
                if args.follow {
                    break;
                }
                bail!(
                    "function {} has no log (log group {group} does not exist)",
                    args.function
                );
            };
            for e in page
                .get("events")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let id = e.get("eventId").and_then(Value::as_str).unwrap_or("");
                if seen.contains(id) {
                    continue;
                }
                let ts = e.get("timestamp").and_then(Value::as_i64).unwrap_or(0);
                let stream = e.get("logStreamName").and_then(Value::as_str).unwrap_or("");
                let message = e.get("message").and_then(Value::as_str).unwrap_or("");
                let message = message.strip_suffix('\n').unwrap_or(message);
                writeln!(out, "{} {stream} {message}", lambox_api::logs::utc(ts))
                    .context("write the log")?;
                if newest.is_none_or(|n| ts > n) {
                    newest = Some(ts);
                    newest_ids.clear();
                }
                if Some(ts) == newest {
                    newest_ids.insert(id.to_owned());
                }
            }
            token = page
                .get("nextToken")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        out.flush().context("write the log")?;
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        // The next poll starts at the newest timestamp printed; the events printed with that
        // timestamp are skipped.
        if newest != start {
            seen = newest_ids;
        } else {
            seen.extend(newest_ids);
        }
        start = newest;
        std::thread::sleep(FOLLOW_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_durations() {
        assert_eq!(parse_since("10m").expect("ok"), Some(600_000));
        assert_eq!(parse_since("2h").expect("ok"), Some(7_200_000));
        assert_eq!(parse_since("all").expect("ok"), None);
        assert!(parse_since("10").is_err());
        assert!(parse_since("m").is_err());
        assert!(parse_since("5y").is_err());
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(segment("fn:live"), "fn%3Alive");
        assert_eq!(segment("$LATEST"), "%24LATEST");
        assert_eq!(segment("a/b"), "a%2Fb");
    }
}
