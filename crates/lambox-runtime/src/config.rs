//! A function's configuration and the environment Lambda gives its process.
//!
//! # Environment variables
//!
//! [`FunctionConfig::lambda_environment`] computes the complete environment of one execution
//! environment except `AWS_LAMBDA_RUNTIME_API` (the [`Launcher`](crate::launch::Launcher) adds
//! that). Precedence, lowest first — a later layer replaces a key of an earlier one:
//!
//! 1. Lambda's unreserved defaults: `LANG=en_US.UTF-8`,
//!    `PATH=/usr/local/bin:/usr/bin/:/bin:/opt/bin`, `LD_LIBRARY_PATH=/lib64:/usr/lib64:`
//!    `/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib` (reference §2.1);
//! 2. the image's `ENV`;
//! 3. the user's variables (`--env`, the function's `Environment.Variables`);
//! 4. Lambda's reserved variables, which always win: `AWS_LAMBDA_FUNCTION_NAME`,
//!    `AWS_LAMBDA_FUNCTION_VERSION` (`$LATEST`), `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`,
//!    `AWS_LAMBDA_LOG_GROUP_NAME` (`/aws/lambda/NAME`), `AWS_LAMBDA_LOG_STREAM_NAME`
//!    (`YYYY/MM/DD/[$LATEST]<32 hex>`, new per environment), `AWS_REGION`,
//!    `AWS_DEFAULT_REGION`, `AWS_LAMBDA_INITIALIZATION_TYPE=on-demand`,
//!    `LAMBDA_TASK_ROOT=/var/task`, `LAMBDA_RUNTIME_DIR=/var/runtime`, `TZ=:UTC`, and the
//!    credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) when
//!    [`FunctionConfig::credentials`] has them.
//!
//! Every reserved key (the list in Lambda's documentation, [`RESERVED_KEYS`]) is removed from
//! layers 2 and 3 first, so an image or user value for, say, `AWS_SESSION_TOKEN` never leaks
//! through when no credentials are configured. `_HANDLER`, `AWS_EXECUTION_ENV` and
//! `_X_AMZN_TRACE_ID` are not set for container images (AWS base images export `_HANDLER`
//! themselves), and `AWS_LAMBDA_RUNTIME_API` is the launcher's.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::clock;
use crate::launch::LaunchSpec;
use crate::wire::LATEST;

/// Keys Lambda reserves: a user or image value for any of them is dropped (reference §2.1,
/// Lambda Developer Guide "Reserved environment variables").
pub const RESERVED_KEYS: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
    "TZ",
];

/// Lambda's `PATH` default.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin/:/bin:/opt/bin";
/// Lambda's `LD_LIBRARY_PATH` default (with `LAMBDA_RUNTIME_DIR` and `LAMBDA_TASK_ROOT`
/// expanded).
pub const DEFAULT_LD_LIBRARY_PATH: &str =
    "/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib";
/// `LAMBDA_TASK_ROOT`.
pub const TASK_ROOT: &str = "/var/task";
/// `LAMBDA_RUNTIME_DIR`.
pub const RUNTIME_DIR: &str = "/var/runtime";
/// Working directory when neither the image nor the function sets one: the container default.
pub const DEFAULT_WORKDIR: &str = "/";

/// Why a configuration cannot be run. Messages are one line and name the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Names are 1–64 characters of `[a-zA-Z0-9-_]`.
    #[error("invalid function name {0:?}: 1 to 64 letters, digits, '-' or '_'")]
    InvalidName(String),
    /// 128–10240 MB.
    #[error("memory size {0} MB is outside 128..=10240")]
    Memory(u32),
    /// 1–900 s.
    #[error("timeout {0} s is outside 1..=900")]
    Timeout(u32),
    /// 512–10240 MB.
    #[error("ephemeral storage {0} MB is outside 512..=10240")]
    EphemeralStorage(u32),
    /// Entrypoint and command are both empty.
    #[error("no command to run: the image has no ENTRYPOINT or CMD and none was given")]
    EmptyCommand,
    /// User keys match `[a-zA-Z][a-zA-Z0-9_]+`.
    #[error("invalid environment variable name {0:?}: a letter, then letters, digits or '_'")]
    InvalidEnvKey(String),
    /// User variables total at most 4 KB.
    #[error("environment variables take {0} bytes, more than Lambda's 4 KB")]
    EnvTooLarge(usize),
    /// The concurrency of a pool is at least 1.
    #[error("concurrency must be at least 1")]
    Concurrency,
}

/// The image's run configuration, already merged with any function overrides
/// (`ImageConfig.EntryPoint/Command/WorkingDirectory`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `ENTRYPOINT` (absolute `argv[0]`).
    pub entrypoint: Vec<String>,
    /// `CMD`, appended to the entrypoint.
    pub cmd: Vec<String>,
    /// `WORKDIR`; [`DEFAULT_WORKDIR`] when unset.
    pub workdir: Option<String>,
    /// `ENV`, as `(key, value)`; later entries win.
    pub env: Vec<(String, String)>,
}

impl ImageConfig {
    /// Splits OCI `KEY=VALUE` strings; an entry without `=` is a key with an empty value.
    pub fn parse_env(items: &[String]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (kv.clone(), String::new()),
            })
            .collect()
    }
}

/// Credentials handed to the function (Lambda gives it the execution role's).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AwsCredentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// `AWS_SESSION_TOKEN`.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl AwsCredentials {
    /// The three variables from this process's environment, each when set and not empty;
    /// `None` when none is.
    pub fn from_process_env() -> Option<Self> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let c = AwsCredentials {
            access_key_id: get("AWS_ACCESS_KEY_ID"),
            secret_access_key: get("AWS_SECRET_ACCESS_KEY"),
            session_token: get("AWS_SESSION_TOKEN"),
        };
        (c != AwsCredentials::default()).then_some(c)
    }
}

/// One function, as Lambda's `FunctionConfiguration` has it (the parts that matter to running
/// it). Build with [`FunctionConfig::new`] and adjust the public fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionConfig {
    /// Function name.
    pub name: String,
    /// Memory, MB (128–10240; default 128).
    pub memory_mb: u32,
    /// Timeout, seconds (1–900; default 3).
    pub timeout_secs: u32,
    /// Size of `/tmp`, MB (512–10240; default 512).
    pub ephemeral_storage_mb: u32,
    /// The user's environment variables; later entries win.
    pub env: Vec<(String, String)>,
    /// Entrypoint, command, working directory and `ENV` of the image.
    pub image: ImageConfig,
    /// Region (default `us-east-1`).
    pub region: String,
    /// Account id used in ARNs (default `000000000000`).
    pub account_id: String,
    /// Credentials to pass to the function, if any.
    pub credentials: Option<AwsCredentials>,
    /// The version that runs: `$LATEST` or a published version number
    /// (`AWS_LAMBDA_FUNCTION_VERSION`, `START … Version:`, `X-Amz-Executed-Version`).
    pub version: String,
}

impl FunctionConfig {
    /// Lambda's defaults: 128 MB, 3 s, 512 MB of `/tmp`, `us-east-1`.
    pub fn new(name: impl Into<String>, image: ImageConfig) -> Self {
        FunctionConfig {
            name: name.into(),
            memory_mb: 128,
            timeout_secs: 3,
            ephemeral_storage_mb: 512,
            env: Vec::new(),
            image,
            region: "us-east-1".to_owned(),
            account_id: "000000000000".to_owned(),
            credentials: None,
            version: LATEST.to_owned(),
        }
    }

    /// Checks every limit Lambda enforces on these fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name_ok = (1..=64).contains(&self.name.len())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(ConfigError::InvalidName(self.name.clone()));
        }
        if !(128..=10240).contains(&self.memory_mb) {
            return Err(ConfigError::Memory(self.memory_mb));
        }
        if !(1..=900).contains(&self.timeout_secs) {
            return Err(ConfigError::Timeout(self.timeout_secs));
        }
        if !(512..=10240).contains(&self.ephemeral_storage_mb) {
            return Err(ConfigError::EphemeralStorage(self.ephemeral_storage_mb));
        }
        if self.argv().is_empty() {
            return Err(ConfigError::EmptyCommand);
        }
        let mut total = 0;
        for (k, v) in &self.env {
            let mut bytes = k.bytes();
            let key_ok = k.len() >= 2
                && bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !key_ok {
                return Err(ConfigError::InvalidEnvKey(k.clone()));
            }
            total += k.len() + v.len();
        }
        if total > 4096 {
            return Err(ConfigError::EnvTooLarge(total));
        }
        Ok(())
    }

    /// The timeout as a duration.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.timeout_secs))
    }

    /// `arn:aws:lambda:REGION:ACCOUNT:function:NAME`, the unqualified ARN the runtime sees as
    /// `Lambda-Runtime-Invoked-Function-Arn`.
    pub fn function_arn(&self) -> String {
        format!(
            "arn:aws:lambda:{}:{}:function:{}",
            self.region, self.account_id, self.name
        )
    }

    /// `/aws/lambda/NAME`.
    pub fn log_group_name(&self) -> String {
        format!("/aws/lambda/{}", self.name)
    }

    /// Entrypoint followed by command.
    pub fn argv(&self) -> Vec<String> {
        self.image
            .entrypoint
            .iter()
            .chain(&self.image.cmd)
            .cloned()
            .collect()
    }

    /// The complete environment (see the module docs for precedence), sorted by key.
    pub fn lambda_environment(&self, log_stream_name: &str) -> Vec<(String, String)> {
        let mut env = BTreeMap::new();
        env.insert("LANG".to_owned(), "en_US.UTF-8".to_owned());
        env.insert("PATH".to_owned(), DEFAULT_PATH.to_owned());
        env.insert(
            "LD_LIBRARY_PATH".to_owned(),
            DEFAULT_LD_LIBRARY_PATH.to_owned(),
        );
        for (k, v) in self.image.env.iter().chain(&self.env) {
            if RESERVED_KEYS.contains(&k.as_str()) {
                tracing::debug!(key = %k, "reserved environment variable replaced by Lambda's");
                continue;
            }
            env.insert(k.clone(), v.clone());
        }
        let mut reserved = vec![
            ("AWS_LAMBDA_FUNCTION_NAME", self.name.clone()),
            ("AWS_LAMBDA_FUNCTION_VERSION", self.version.clone()),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                self.memory_mb.to_string(),
            ),
            ("AWS_LAMBDA_LOG_GROUP_NAME", self.log_group_name()),
            ("AWS_LAMBDA_LOG_STREAM_NAME", log_stream_name.to_owned()),
            ("AWS_REGION", self.region.clone()),
            ("AWS_DEFAULT_REGION", self.region.clone()),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
            ("LAMBDA_TASK_ROOT", TASK_ROOT.to_owned()),
            ("LAMBDA_RUNTIME_DIR", RUNTIME_DIR.to_owned()),
            ("TZ", ":UTC".to_owned()),
        ];
        if let Some(c) = &self.credentials {
            for (k, v) in [
                ("AWS_ACCESS_KEY_ID", &c.access_key_id),
                ("AWS_SECRET_ACCESS_KEY", &c.secret_access_key),
                ("AWS_SESSION_TOKEN", &c.session_token),
            ] {
                if let Some(v) = v {
                    reserved.push((k, v.clone()));
                }
            }
        }
        for (k, v) in reserved {
            env.insert(k.to_owned(), v);
        }
        env.into_iter().collect()
    }

    /// What to launch for one new execution environment (with a new log stream name).
    pub fn launch_spec(&self) -> LaunchSpec {
        LaunchSpec {
            argv: self.argv(),
            env: self.lambda_environment(&new_log_stream_name(SystemTime::now(), &self.version)),
            workdir: self
                .image
                .workdir
                .clone()
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| DEFAULT_WORKDIR.to_owned()),
            memory_mb: self.memory_mb,
            ephemeral_storage_mb: self.ephemeral_storage_mb,
        }
    }
}

/// `YYYY/MM/DD/[VERSION]<32 lowercase hex>`, Lambda's log stream name for one environment.
pub fn new_log_stream_name(now: SystemTime, version: &str) -> String {
    format!(
        "{}/[{version}]{}",
        clock::date_path(now),
        uuid::Uuid::new_v4().simple()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> FunctionConfig {
        FunctionConfig::new(
            "fn",
            ImageConfig {
                entrypoint: vec!["/bin/sh".into()],
                cmd: vec!["-c".into(), "true".into()],
                workdir: None,
                env: ImageConfig::parse_env(&[
                    "PATH=/img/bin".into(),
                    "IMG=1".into(),
                    "SHARED=image".into(),
                    "TZ=Europe/Paris".into(),
                ]),
            },
        )
    }

    #[test]
    fn environment_precedence() {
        let mut c = config();
        c.env = vec![
            ("SHARED".into(), "user".into()),
            ("AWS_REGION".into(), "mars-1".into()),
            ("AWS_SESSION_TOKEN".into(), "leak".into()),
        ];
        let env: BTreeMap<_, _> = c.lambda_environment("S").into_iter().collect();
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("PATH"), Some("/img/bin"));
        assert_eq!(get("LANG"), Some("en_US.UTF-8"));
        assert_eq!(get("LD_LIBRARY_PATH"), Some(DEFAULT_LD_LIBRARY_PATH));
        assert_eq!(get("IMG"), Some("1"));
        assert_eq!(get("SHARED"), Some("user"));
        assert_eq!(get("AWS_REGION"), Some("us-east-1"));
        assert_eq!(get("AWS_DEFAULT_REGION"), Some("us-east-1"));
        assert_eq!(get("TZ"), Some(":UTC"));
        assert_eq!(get("AWS_SESSION_TOKEN"), None);
        assert_eq!(get("AWS_LAMBDA_FUNCTION_NAME"), Some("fn"));
        assert_eq!(get("AWS_LAMBDA_FUNCTION_VERSION"), Some("$LATEST"));
        assert_eq!(get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), Some("128"));
        assert_eq!(get("AWS_LAMBDA_LOG_GROUP_NAME"), Some("/aws/lambda/fn"));
        assert_eq!(get("AWS_LAMBDA_LOG_STREAM_NAME"), Some("S"));
        assert_eq!(get("AWS_LAMBDA_INITIALIZATION_TYPE"), Some("on-demand"));
        assert_eq!(get("LAMBDA_TASK_ROOT"), Some("/var/task"));
        assert_eq!(get("LAMBDA_RUNTIME_DIR"), Some("/var/runtime"));
        assert_eq!(get("AWS_LAMBDA_RUNTIME_API"), None);

        c.credentials = Some(AwsCredentials {
            access_key_id: Some("AKID".into()),
            secret_access_key: Some("SECRET".into()),
            session_token: None,
        });
        let env: BTreeMap<_, _> = c.lambda_environment("S").into_iter().collect();
        assert_eq!(
            env.get("AWS_ACCESS_KEY_ID").map(String::as_str),
            Some("AKID")
        );
        assert_eq!(
            env.get("AWS_SECRET_ACCESS_KEY").map(String::as_str),
            Some("SECRET")
        );
        assert!(!env.contains_key("AWS_SESSION_TOKEN"));
        assert!(!format!("{:?}", c.credentials).contains("SECRET"));
    }

    #[test]
    fn log_stream_name_format() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_568_764_966);
        let name = new_log_stream_name(t, LATEST);
        let (date, rest) = name.split_at(10);
        assert_eq!(date, "2019/09/18");
        let hex = rest.strip_prefix("/[$LATEST]").expect("prefix");
        assert_eq!(hex.len(), 32);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn validation() {
        let mut c = config();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(
            c.function_arn(),
            "arn:aws:lambda:us-east-1:000000000000:function:fn"
        );
        assert_eq!(c.launch_spec().workdir, "/");
        assert_eq!(c.launch_spec().argv, ["/bin/sh", "-c", "true"]);
        c.memory_mb = 64;
        assert_eq!(c.validate(), Err(ConfigError::Memory(64)));
        c.memory_mb = 128;
        c.timeout_secs = 901;
        assert_eq!(c.validate(), Err(ConfigError::Timeout(901)));
        c.timeout_secs = 3;
        c.env = vec![("1X".into(), String::new())];
        assert_eq!(c.validate(), Err(ConfigError::InvalidEnvKey("1X".into())));
        c.env = vec![("BIG".into(), "x".repeat(5000))];
        assert_eq!(c.validate(), Err(ConfigError::EnvTooLarge(5003)));
        c.env.clear();
        c.name = "a/b".into();
        assert!(matches!(c.validate(), Err(ConfigError::InvalidName(_))));
        c.name = "ok".into();
        c.image = ImageConfig::default();
        assert_eq!(c.validate(), Err(ConfigError::EmptyCommand));
    }
}
