//! The operations: validation exactly where AWS validates, state changes, and the answers.
//! [`crate::router`] maps HTTP onto these; each returns the wire type or an [`ApiError`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{self, ApiError};
use crate::images::{ImageFailure, ImageResolver, ResolvedImage};
use crate::model::*;
use crate::names::{valid_name, FunctionRef, Qualifier};
use crate::scheduler::Scheduler;
use crate::state::{EventWriter, State};

/// lambox's identity and limits as the API reports them.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The account in every ARN (default `000000000000`).
    pub account_id: String,
    /// The region in every ARN (default `us-east-1`).
    pub region: String,
    /// Concurrent executions of the account (Lambda's default quota: 1000).
    pub account_concurrency: u64,
    /// Multiplies Lambda's async timings (retry delays of 1 and 2 minutes, event ages) so
    /// tests can run them in seconds; 1.0 in normal use.
    pub async_retry_delay_scale: f64,
    /// Events of one function run at most this many at once; the others wait in order of
    /// arrival (lambox's bound, see [`Lambda::event_gate`]).
    pub async_concurrency: u32,
}

/// Lambda's minimum unreserved concurrency (100), or a tenth of a smaller account limit.
fn min_unreserved(limit: u64) -> u64 {
    100.min(limit / 10)
}

/// The Lambda control plane.
pub struct Lambda {
    pub(crate) config: ServiceConfig,
    pub(crate) state: Arc<State>,
    /// Stores accepted async events, grouped (see [`EventWriter`]).
    pub(crate) events: EventWriter,
    pub(crate) images: Arc<dyn ImageResolver>,
    pub(crate) scheduler: Scheduler,
    /// Background work (image resolution, async events) in progress.
    pub(crate) background: AtomicUsize,
    /// Set by [`Lambda::shutdown`]: a pool refusing an invoke then means lambox is stopping,
    /// not that the function's revision changed under the invoke.
    pub(crate) stopping: std::sync::atomic::AtomicBool,
    /// Per function, the events allowed to run at once ([`Lambda::event_gate`]).
    pub(crate) event_gates:
        std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl std::fmt::Debug for Lambda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lambda")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Counts background work while alive.
pub(crate) struct BackgroundGuard(Arc<Lambda>);

impl Drop for BackgroundGuard {
    fn drop(&mut self) {
        self.0.background.fetch_sub(1, Ordering::AcqRel);
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// A uniform number in [0, 1) from the low 53 bits of a v4 UUID (all random: its fixed
/// version and variant bits are higher up), i.e. from the OS's generator.
fn unit_random() -> f64 {
    const BITS: u64 = (1 << 53) - 1;
    ((uuid::Uuid::new_v4().as_u128() as u64) & BITS) as f64 / (BITS + 1) as f64
}

fn new_revision() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

/// Parses a JSON request body (empty = `{}`).
pub fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        error::invalid_request_content(&format!("Could not parse request body into json: {e}"))
    })
}

fn null_error(field: &str) -> ApiError {
    ApiError::new(
        http::StatusCode::BAD_REQUEST,
        "ValidationException",
        "User",
        &format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
        ),
    )
}

fn check_role(role: &str) -> Result<(), ApiError> {
    // arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+
    let ok = (|| {
        let rest = role.strip_prefix("arn:")?;
        let (partition, rest) = rest.split_once(':')?;
        if !(partition.is_empty()
            || partition
                .strip_prefix("aws")
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-')))
        {
            return None;
        }
        let rest = rest.strip_prefix("iam::")?;
        let (account, rest) = rest.split_once(':')?;
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let path = rest.strip_prefix("role")?;
        let path = path.strip_prefix('/').unwrap_or(path);
        (!path.is_empty()
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@-_/".contains(&b)))
        .then_some(())
    })();
    ok.ok_or_else(|| {
        error::validation(
            role,
            "role",
            "Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*)?:iam::\\d{12}:role/?[a-zA-Z_0-9+=,.@\\-_/]+",
        )
    })
}

/// The ImageUri of an Image function's code, refused as Lambda refuses it with ZipFile/S3
/// code or without an ImageUri; `doing` is "creating" or "updating".
fn image_code(has_zip: bool, image_uri: Option<&str>, doing: &str) -> Result<String, ApiError> {
    if has_zip {
        return Err(error::invalid_parameter(&format!(
            "Please don't provide ZipFile or S3Bucket/S3Key when {doing} a function with packageType Image."
        )));
    }
    image_uri
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            error::invalid_parameter(&format!(
                "Please provide ImageUri when {doing} a function with packageType Image."
            ))
        })
}

/// `value` within `min..=max`: below, botocore's constraint error on `member`; above, Lambda's
/// InvalidParameterValueException naming `field`.
fn check_range<T>(value: T, min: T, max: T, member: &str, field: &str) -> Result<(), ApiError>
where
    T: PartialOrd + std::fmt::Display,
{
    if value < min {
        return Err(error::validation(
            &value.to_string(),
            member,
            &format!("Member must have value greater than or equal to {min}"),
        ));
    }
    if value > max {
        return Err(error::invalid_parameter(&format!(
            "'{field}' value failed to satisfy constraint: Member must have value less than or equal to {max}"
        )));
    }
    Ok(())
}
/// The settings CreateFunction and UpdateFunctionConfiguration share, validated as Lambda
/// does: model constraints (min, length, pattern) are `ValidationException`; Lambda's own
/// limits beyond the model (memory ≤ 10240, timeout ≤ 900, /tmp ≤ 10240, environment ≤ 4 KB,
/// reserved keys) are `InvalidParameterValueException`.
fn check_settings(
    memory: Option<i64>,
    timeout: Option<i64>,
    storage: Option<EphemeralStorage>,
    description: Option<&str>,
    environment: Option<&Environment>,
    image_config: Option<&ImageConfig>,
) -> Result<(), ApiError> {
    // Below the minimum is botocore's constraint (ValidationException); above the maximum is
    // Lambda's own limit (InvalidParameterValueException), as AWS answers each.
    if let Some(m) = memory {
        check_range(m, 128, 10240, "memorySize", "MemorySize")?;
    }
    if let Some(t) = timeout {
        check_range(t, 1, 900, "timeout", "Timeout")?;
    }
    if let Some(s) = storage {
        check_range(
            s.size,
            512,
            10240,
            "ephemeralStorage.size",
            "EphemeralStorage.Size",
        )?;
    }
    if let Some(d) = description {
        if d.chars().count() > 256 {
            return Err(error::validation(
                d,
                "description",
                "Member must have length less than or equal to 256",
            ));
        }
    }
    if let Some(env) = environment {
        for k in env.variables.keys() {
            let mut b = k.bytes();
            let ok = k.len() >= 2
                && b.next().is_some_and(|c| c.is_ascii_alphabetic())
                && b.all(|c| c.is_ascii_alphanumeric() || c == b'_');
            if !ok {
                return Err(ApiError::new(
                    http::StatusCode::BAD_REQUEST,
                    "ValidationException",
                    "User",
                    "1 validation error detected: Value at 'environment.variables' failed to satisfy constraint: Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+]",
                ));
            }
        }
        let reserved: Vec<&str> = env
            .variables
            .keys()
            .map(String::as_str)
            .filter(|k| lambox_runtime::config::RESERVED_KEYS.contains(k))
            .collect();
        if !reserved.is_empty() {
            return Err(error::invalid_parameter(&format!(
                "Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: {}",
                reserved.join(", ")
            )));
        }
        // Lambda measures the variables as a JSON object.
        let measured = serde_json::to_string(&env.variables).unwrap_or_default();
        if measured.len() > 4096 {
            return Err(error::invalid_parameter(&format!(
                "Lambda was unable to configure your environment variables because the environment variables you have provided exceeded the 4KB limit. String measured: {measured}"
            )));
        }
    }
    if let Some(ic) = image_config {
        for list in [&ic.entry_point, &ic.command].into_iter().flatten() {
            if list.len() > 1500 {
                return Err(error::invalid_parameter(
                    "ImageConfig lists take at most 1500 items",
                ));
            }
        }
        if let Some(w) = &ic.working_directory {
            if w.len() > 1000 {
                return Err(error::validation(
                    w,
                    "imageConfig.workingDirectory",
                    "Member must have length less than or equal to 1000",
                ));
            }
        }
    }
    Ok(())
}

fn check_architectures(arch: Option<&Vec<String>>) -> Result<Vec<String>, ApiError> {
    match arch {
        None => Ok(vec!["x86_64".to_owned()]),
        Some(a) if a.len() != 1 => Err(error::validation(
            &format!("{a:?}"),
            "architectures",
            "Member must have length less than or equal to 1",
        )),
        Some(a) if a[0] == "x86_64" || a[0] == "arm64" => Ok(a.clone()),
        Some(a) => Err(error::validation(
            &format!("[{}]", a[0]),
            "architectures",
            "Member must satisfy constraint: [Member must satisfy enum value set: [x86_64, arm64]]",
        )),
    }
}

/// Where a resolved invoke goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub record: VersionRecord,
    /// `$LATEST` or the version number (what `X-Amz-Executed-Version` says).
    pub version: String,
}

impl Lambda {
    /// A control plane over `state`, resolving images with `images` and running functions
    /// through `scheduler`.
    pub fn new(
        config: ServiceConfig,
        state: State,
        images: Arc<dyn ImageResolver>,
        scheduler: Scheduler,
    ) -> Arc<Lambda> {
        Arc::new(Lambda {
            config,
            state: Arc::new(state),
            events: EventWriter::default(),
            images,
            scheduler,
            background: AtomicUsize::new(0),
            stopping: std::sync::atomic::AtomicBool::new(false),
            event_gates: std::sync::Mutex::default(),
        })
    }

    pub(crate) fn background(self: &Arc<Self>) -> BackgroundGuard {
        self.background.fetch_add(1, Ordering::AcqRel);
        BackgroundGuard(self.clone())
    }

    /// Background tasks (image resolution, async events) still running.
    pub fn background_tasks(&self) -> usize {
        self.background.load(Ordering::Acquire)
    }

    /// Whether lambox is stopping ([`Lambda::drain`] or [`Lambda::shutdown`] began): no event
    /// run starts any more.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Stops every pool (running invokes finish, idle environments are killed).
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        self.scheduler.shutdown();
    }

    /// `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`.
    pub fn arn(&self, name: &str, qualifier: Option<&str>) -> String {
        let base = format!(
            "arn:aws:lambda:{}:{}:function:{name}",
            self.config.region, self.config.account_id
        );
        match qualifier {
            Some(q) => format!("{base}:{q}"),
            None => base,
        }
    }

    /// The configuration as answered: ARNs filled in (`$LATEST` unqualified, versions
    /// qualified, as Lambda does).
    pub fn render(&self, record: &VersionRecord) -> FunctionConfiguration {
        let mut c = record.configuration.clone();
        c.function_arn = if c.version == "$LATEST" {
            self.arn(&c.function_name, None)
        } else {
            self.arn(&c.function_name, Some(&c.version))
        };
        c
    }

    pub(crate) fn parse_name(
        &self,
        input: &str,
        allow_qualifier: bool,
    ) -> Result<FunctionRef, ApiError> {
        FunctionRef::parse(
            input,
            &self.config.account_id,
            &self.config.region,
            allow_qualifier,
        )
    }

    fn latest_or_404(&self, r: &FunctionRef) -> Result<VersionRecord, ApiError> {
        if r.foreign {
            return Err(error::function_not_found(&self.arn(&r.name, None)));
        }
        self.state
            .latest(&r.name)?
            .ok_or_else(|| error::function_not_found(&self.arn(&r.name, None)))
    }

    /// Resolves a name and qualifier to a version record (an alias to its FunctionVersion).
    pub fn target(&self, r: &FunctionRef) -> Result<Target, ApiError> {
        self.resolve(r, false)
    }

    /// As [`Lambda::target`], for an invoke: a weighted alias picks its additional version
    /// with the probability of its weight.
    pub(crate) fn invoke_target(&self, r: &FunctionRef) -> Result<Target, ApiError> {
        self.resolve(r, true)
    }

    fn resolve(&self, r: &FunctionRef, route: bool) -> Result<Target, ApiError> {
        let latest = self.latest_or_404(r)?;
        match &r.qualifier {
            None | Some(Qualifier::Latest) => Ok(Target {
                record: latest,
                version: "$LATEST".to_owned(),
            }),
            Some(Qualifier::Version(n)) => {
                let rec = self.state.version(&r.name, *n)?.ok_or_else(|| {
                    error::function_not_found(&self.arn(&r.name, Some(&n.to_string())))
                })?;
                Ok(Target {
                    record: rec,
                    version: n.to_string(),
                })
            }
            Some(Qualifier::Alias(a)) => {
                let alias = self
                    .state
                    .alias(&r.name, a)?
                    .ok_or_else(|| error::function_not_found(&self.arn(&r.name, Some(a))))?;
                let routed = alias
                    .routing_config
                    .as_ref()
                    .and_then(|rc| rc.additional_version_weights.iter().next())
                    .filter(|(_, weight)| route && unit_random() < **weight);
                let version = match routed {
                    Some((v, _)) => v,
                    None => &alias.function_version,
                };
                let q = Qualifier::parse(version)?;
                self.target(&FunctionRef {
                    name: r.name.clone(),
                    qualifier: Some(q),
                    foreign: false,
                })
            }
        }
    }

    // ---- CreateFunction -------------------------------------------------------------------

    /// CreateFunction: 201 with the function `Pending`; the image is resolved in the
    /// background (then `Active`, or `Failed` with the reason).
    pub fn create_function(
        self: &Arc<Self>,
        body: &[u8],
    ) -> Result<FunctionConfiguration, ApiError> {
        let req: CreateFunctionRequest = parse_body(body)?;
        let name_in = req
            .function_name
            .as_deref()
            .ok_or_else(|| null_error("functionName"))?;
        let r = self.parse_name(name_in, false)?;
        let role = req.role.as_deref().ok_or_else(|| null_error("role"))?;
        check_role(role)?;
        match req.package_type.as_deref() {
            Some("Image") => {}
            None | Some("Zip") => {
                return Err(error::invalid_parameter(
                    "lambox runs container-image functions only: PackageType Zip is not supported. Create the function with PackageType Image and Code.ImageUri.",
                ))
            }
            Some(other) => {
                return Err(error::validation(
                    other,
                    "packageType",
                    "Member must satisfy enum value set: [Zip, Image]",
                ))
            }
        }
        let code = req.code.as_ref().ok_or_else(|| null_error("code"))?;
        let image_uri = image_code(
            code.zip_file.is_some() || code.s3_bucket.is_some(),
            code.image_uri.as_deref(),
            "creating",
        )?;
        if req.runtime.is_some() || req.handler.is_some() {
            return Err(error::invalid_parameter(
                "Please don't provide Handler or Runtime or Layer when the intended function PackageType is Image.",
            ));
        }
        let architectures = check_architectures(req.architectures.as_ref())?;
        check_settings(
            req.memory_size,
            req.timeout,
            req.ephemeral_storage,
            req.description.as_deref(),
            req.environment.as_ref(),
            req.image_config.as_ref(),
        )?;
        let image_config = req.image_config.clone().unwrap_or_default();
        let record = VersionRecord {
            configuration: FunctionConfiguration {
                function_name: r.name.clone(),
                function_arn: String::new(),
                role: role.to_owned(),
                code_size: 0,
                description: req.description.clone().unwrap_or_default(),
                timeout: req.timeout.unwrap_or(3),
                memory_size: req.memory_size.unwrap_or(128),
                last_modified: last_modified(now_ms()),
                code_sha256: String::new(),
                version: "$LATEST".to_owned(),
                environment: req.environment.clone(),
                tracing_config: TracingConfig {
                    mode: "PassThrough".to_owned(),
                },
                revision_id: new_revision(),
                state: "Pending".to_owned(),
                state_reason: Some("The function is being created.".to_owned()),
                state_reason_code: Some("Creating".to_owned()),
                last_update_status: "Successful".to_owned(),
                last_update_status_reason: None,
                last_update_status_reason_code: None,
                package_type: "Image".to_owned(),
                image_config_response: (image_config != ImageConfig::default()).then(|| {
                    ImageConfigResponse {
                        image_config: Some(image_config.clone()),
                    }
                }),
                architectures,
                ephemeral_storage: req
                    .ephemeral_storage
                    .unwrap_or(EphemeralStorage { size: 512 }),
                logging_config: LoggingConfig {
                    log_format: "Text".to_owned(),
                    log_group: format!("/aws/lambda/{}", r.name),
                },
            },
            image_uri,
            resolved_image_uri: None,
            image_config,
        };
        if r.foreign || !valid_name(&r.name) {
            return Err(error::invalid_parameter(&format!(
                "Functions are created in {} of account {}: {name_in}",
                self.config.region, self.config.account_id
            )));
        }
        if let Some(tags) = &req.tags {
            check_tags(tags)?;
        }
        if !self.state.insert_function(&record, req.tags.as_ref())? {
            return Err(error::conflict(&format!(
                "Function already exist: {}",
                r.name
            )));
        }
        tracing::info!(function = %r.name, image = %record.image_uri, "function created; resolving its image");
        self.spawn_resolve(
            r.name.clone(),
            record.configuration.revision_id.clone(),
            record.image_uri.clone(),
            record.configuration.architectures[0].clone(),
            req.publish.unwrap_or(false),
            false,
        );
        Ok(self.render(&record))
    }

    /// Resolves the image of `name` in the background and records the outcome: for a create,
    /// State Active or Failed; for a code update, LastUpdateStatus Successful or Failed (the
    /// old code stays on failure).
    fn spawn_resolve(
        self: &Arc<Self>,
        name: String,
        revision: String,
        uri: String,
        architecture: String,
        publish: bool,
        update: bool,
    ) {
        let guard = self.background();
        let this = self.clone();
        tokio::spawn(async move {
            let images = this.images.clone();
            let u = uri.clone();
            let result = tokio::task::spawn_blocking(move || images.resolve(&u, &architecture))
                .await
                .unwrap_or_else(|e| {
                    Err(ImageFailure {
                        code: "InternalError",
                        reason: format!("image resolution stopped: {e}"),
                    })
                });
            if let Err(e) = this.finish_resolve(&name, &revision, &uri, result, publish, update) {
                tracing::error!(function = %name, error = ?e, "recording the image resolution failed");
            }
            drop(guard);
        });
    }

    fn finish_resolve(
        &self,
        name: &str,
        revision: &str,
        uri: &str,
        result: Result<ResolvedImage, ImageFailure>,
        publish: bool,
        update: bool,
    ) -> Result<(), ApiError> {
        let Some(mut rec) = self.state.latest(name)? else {
            return Ok(()); // deleted meanwhile
        };
        if rec.configuration.revision_id != revision {
            return Ok(()); // superseded
        }
        let c = &mut rec.configuration;
        match &result {
            Ok(img) => {
                tracing::info!(function = name, digest = %img.digest, "image resolved; function active");
                c.code_sha256 = img.digest.hex();
                c.code_size = img.code_size;
                c.state = "Active".to_owned();
                c.state_reason = None;
                c.state_reason_code = None;
                c.last_update_status = "Successful".to_owned();
                c.last_update_status_reason = None;
                c.last_update_status_reason_code = None;
                rec.image_uri = uri.to_owned();
                rec.resolved_image_uri = Some(img.resolved_uri.clone());
            }
            Err(f) => {
                tracing::warn!(function = name, code = f.code, reason = %f.reason, "image resolution failed");
                if update {
                    c.last_update_status = "Failed".to_owned();
                    c.last_update_status_reason = Some(f.reason.clone());
                    c.last_update_status_reason_code = Some(f.code.to_owned());
                } else {
                    c.state = "Failed".to_owned();
                    c.state_reason = Some(f.reason.clone());
                    c.state_reason_code = Some(f.code.to_owned());
                }
            }
        }
        c.revision_id = new_revision();
        if !self.state.replace_latest_if(revision, &rec)? {
            return Ok(());
        }
        if publish && result.is_ok() {
            self.publish_record(name, &rec, None)?;
        }
        Ok(())
    }

    // ---- Get / List / Delete --------------------------------------------------------------

    /// GetFunction.
    pub fn get_function(&self, r: &FunctionRef) -> Result<GetFunctionResponse, ApiError> {
        let t = self.target(r)?;
        let reserved = self.state.reserved_concurrency(&r.name)?.flatten();
        Ok(GetFunctionResponse {
            configuration: self.render(&t.record),
            code: FunctionCodeLocation {
                repository_type: "ECR".to_owned(),
                image_uri: t.record.image_uri.clone(),
                resolved_image_uri: t.record.resolved_image_uri.clone(),
            },
            tags: self.state.tags(&r.name)?,
            concurrency: reserved.map(|n| Concurrency {
                reserved_concurrent_executions: Some(n as i64),
            }),
        })
    }

    /// GetFunctionConfiguration.
    pub fn get_configuration(&self, r: &FunctionRef) -> Result<FunctionConfiguration, ApiError> {
        Ok(self.render(&self.target(r)?.record))
    }

    /// ListFunctions: `$LATEST` of every function, creation order; `Marker` is opaque (a
    /// position), `MaxItems` 1–10000, at most 50 per page as Lambda.
    pub fn list_functions(
        &self,
        marker: Option<&str>,
        max_items: Option<&str>,
    ) -> Result<ListFunctionsResponse, ApiError> {
        let max = parse_max_items(max_items)?;
        let after: i64 = match marker {
            None => 0,
            Some(m) => m
                .parse()
                .map_err(|_| error::invalid_parameter(&format!("Invalid marker: {m}")))?,
        };
        let mut rows = self.state.list_latest(after, max + 1)?;
        let next_marker = (rows.len() > max).then(|| {
            rows.truncate(max);
            rows.last()
                .map(|(seq, _)| seq.to_string())
                .unwrap_or_default()
        });
        Ok(ListFunctionsResponse {
            functions: rows.iter().map(|(_, r)| self.render(r)).collect(),
            next_marker,
        })
    }

    /// DeleteFunction: the whole function (versions, aliases, environments), or one version.
    pub fn delete_function(&self, r: &FunctionRef) -> Result<(), ApiError> {
        self.latest_or_404(r)?;
        match &r.qualifier {
            None => {
                self.state.delete_function(&r.name)?;
                self.scheduler.remove(&r.name, None);
                tracing::info!(function = %r.name, "function deleted");
                Ok(())
            }
            Some(Qualifier::Latest) => Err(error::invalid_parameter(
                "$LATEST version cannot be deleted without deleting the function.",
            )),
            Some(Qualifier::Alias(_)) => Err(error::invalid_parameter(
                "Deletion of aliases is not supported by DeleteFunction; use DeleteAlias.",
            )),
            Some(Qualifier::Version(n)) => {
                let v = n.to_string();
                let users: Vec<String> = self
                    .state
                    .aliases(&r.name)?
                    .into_iter()
                    .filter(|a| a.invokes(&v))
                    .map(|a| a.alias_arn)
                    .collect();
                if !users.is_empty() {
                    return Err(error::conflict(&format!(
                        "Unable to delete version because the following aliases reference it: [{}]",
                        users.join(", ")
                    )));
                }
                if !self.state.delete_version(&r.name, *n)? {
                    return Err(error::function_not_found(&self.arn(&r.name, Some(&v))));
                }
                self.scheduler.remove(&r.name, Some(&v));
                Ok(())
            }
        }
    }

    // ---- Updates ----------------------------------------------------------------------------

    fn check_updatable(&self, rec: &VersionRecord) -> Result<(), ApiError> {
        let c = &rec.configuration;
        if c.state == "Pending" || c.last_update_status == "InProgress" {
            return Err(error::conflict(&format!(
                "The operation cannot be performed at this time. An update is in progress for resource: {}",
                self.arn(&c.function_name, None)
            )));
        }
        Ok(())
    }

    /// UpdateFunctionConfiguration.
    pub fn update_configuration(
        &self,
        r: &FunctionRef,
        body: &[u8],
    ) -> Result<FunctionConfiguration, ApiError> {
        let req: UpdateFunctionConfigurationRequest = parse_body(body)?;
        let mut rec = self.latest_or_404(r)?;
        if let Some(rev) = &req.revision_id {
            if *rev != rec.configuration.revision_id {
                return Err(error::precondition_failed("GetFunction/GetAlias"));
            }
        }
        self.check_updatable(&rec)?;
        if let Some(role) = &req.role {
            check_role(role)?;
        }
        if req.runtime.is_some() || req.handler.is_some() {
            return Err(error::invalid_parameter(
                "Please don't provide Handler or Runtime or Layer when the intended function PackageType is Image.",
            ));
        }
        check_settings(
            req.memory_size,
            req.timeout,
            req.ephemeral_storage,
            req.description.as_deref(),
            req.environment.as_ref(),
            req.image_config.as_ref(),
        )?;
        let expected = rec.configuration.revision_id.clone();
        let c = &mut rec.configuration;
        if let Some(v) = req.role {
            c.role = v;
        }
        if let Some(v) = req.description {
            c.description = v;
        }
        if let Some(v) = req.timeout {
            c.timeout = v;
        }
        if let Some(v) = req.memory_size {
            c.memory_size = v;
        }
        if let Some(v) = req.ephemeral_storage {
            c.ephemeral_storage = v;
        }
        if let Some(v) = req.environment {
            c.environment = Some(v);
        }
        if let Some(v) = req.image_config {
            c.image_config_response = (v != ImageConfig::default()).then(|| ImageConfigResponse {
                image_config: Some(v.clone()),
            });
            rec.image_config = v;
        }
        let c = &mut rec.configuration;
        c.last_modified = last_modified(now_ms());
        c.last_update_status = "Successful".to_owned();
        c.revision_id = new_revision();
        if !self.state.replace_latest_if(&expected, &rec)? {
            return Err(error::precondition_failed("GetFunction/GetAlias"));
        }
        Ok(self.render(&rec))
    }

    /// UpdateFunctionCode: `LastUpdateStatus` `InProgress` while the new image is resolved;
    /// invokes keep running the old code until it is `Successful`.
    pub fn update_code(
        self: &Arc<Self>,
        r: &FunctionRef,
        body: &[u8],
    ) -> Result<FunctionConfiguration, ApiError> {
        let req: UpdateFunctionCodeRequest = parse_body(body)?;
        let mut rec = self.latest_or_404(r)?;
        if let Some(rev) = &req.revision_id {
            if *rev != rec.configuration.revision_id {
                return Err(error::precondition_failed("GetFunction/GetAlias"));
            }
        }
        let uri = image_code(
            req.zip_file.is_some() || req.s3_bucket.is_some(),
            req.image_uri.as_deref(),
            "updating",
        )?;
        let architectures = match &req.architectures {
            Some(_) => check_architectures(req.architectures.as_ref())?,
            None => rec.configuration.architectures.clone(),
        };
        self.check_updatable(&rec)?;
        if req.dry_run.unwrap_or(false) {
            return Ok(self.render(&rec));
        }
        let expected = rec.configuration.revision_id.clone();
        let c = &mut rec.configuration;
        c.architectures = architectures;
        c.last_modified = last_modified(now_ms());
        c.last_update_status = "InProgress".to_owned();
        c.last_update_status_reason = Some("The function is being created.".to_owned());
        c.last_update_status_reason_code = Some("Creating".to_owned());
        c.revision_id = new_revision();
        if !self.state.replace_latest_if(&expected, &rec)? {
            return Err(error::precondition_failed("GetFunction/GetAlias"));
        }
        self.spawn_resolve(
            r.name.clone(),
            rec.configuration.revision_id.clone(),
            uri,
            rec.configuration.architectures[0].clone(),
            req.publish.unwrap_or(false),
            true,
        );
        Ok(self.render(&rec))
    }

    // ---- Versions ---------------------------------------------------------------------------

    /// The parts of a configuration that make a version different from another.
    fn fingerprint(c: &FunctionConfiguration, rec: &VersionRecord) -> String {
        let mut c = c.clone();
        c.version = String::new();
        c.revision_id = String::new();
        c.last_modified = String::new();
        c.function_arn = String::new();
        c.description = String::new();
        format!(
            "{}|{:?}",
            serde_json::to_string(&c).unwrap_or_default(),
            rec.image_config
        )
    }

    fn publish_record(
        &self,
        name: &str,
        latest: &VersionRecord,
        description: Option<String>,
    ) -> Result<VersionRecord, ApiError> {
        if let Some(newest) = self.state.newest_version(name)? {
            if Self::fingerprint(&newest.configuration, &newest)
                == Self::fingerprint(&latest.configuration, latest)
            {
                return Ok(newest);
            }
        }
        let published = self.state.publish(name, |n| {
            let mut rec = latest.clone();
            let c = &mut rec.configuration;
            c.version = n.to_string();
            c.revision_id = new_revision();
            c.last_modified = last_modified(now_ms());
            if let Some(d) = description {
                c.description = d;
            }
            rec
        })?;
        published.ok_or_else(|| error::function_not_found(&self.arn(name, None)))
    }

    /// PublishVersion.
    pub fn publish_version(
        &self,
        r: &FunctionRef,
        body: &[u8],
    ) -> Result<FunctionConfiguration, ApiError> {
        let req: PublishVersionRequest = parse_body(body)?;
        let latest = self.latest_or_404(r)?;
        if let Some(rev) = &req.revision_id {
            if *rev != latest.configuration.revision_id {
                return Err(error::precondition_failed("GetFunction/GetAlias"));
            }
        }
        if let Some(sha) = &req.code_sha256 {
            if *sha != latest.configuration.code_sha256 {
                return Err(error::invalid_parameter(&format!(
                    "CodeSHA256 ({sha}) is different from current CodeSHA256 in $LATEST ({}). Please try again",
                    latest.configuration.code_sha256
                )));
            }
        }
        self.check_updatable(&latest)?;
        if latest.configuration.state != "Active" {
            return Err(error::conflict(&format!(
                "The operation cannot be performed at this time. The function is currently in the following state: {}",
                latest.configuration.state
            )));
        }
        let rec = self.publish_record(&r.name, &latest, req.description)?;
        Ok(self.render(&rec))
    }

    /// ListVersionsByFunction: `$LATEST` then every version.
    pub fn list_versions(
        &self,
        r: &FunctionRef,
        marker: Option<&str>,
        max_items: Option<&str>,
    ) -> Result<ListVersionsResponse, ApiError> {
        let latest = self.latest_or_404(r)?;
        let max = parse_max_items(max_items)?;
        let mut all = vec![latest];
        all.extend(self.state.versions(&r.name)?);
        let (page, next_marker) = paginate(all, marker, max)?;
        Ok(ListVersionsResponse {
            versions: page.iter().map(|v| self.render(v)).collect(),
            next_marker,
        })
    }

    // ---- Aliases ----------------------------------------------------------------------------

    fn check_alias_name(&self, name: &str) -> Result<(), ApiError> {
        let ok = (1..=128).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !name.bytes().all(|b| b.is_ascii_digit());
        if ok {
            Ok(())
        } else {
            Err(error::validation(
                name,
                "name",
                "Member must satisfy regular expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+)",
            ))
        }
    }

    fn check_alias_version(&self, function: &str, version: &str) -> Result<(), ApiError> {
        match Qualifier::parse(version) {
            Ok(Qualifier::Latest) => Ok(()),
            Ok(Qualifier::Version(n)) => match self.state.version(function, n)? {
                Some(_) => Ok(()),
                None => Err(error::function_not_found(
                    &self.arn(function, Some(version)),
                )),
            },
            _ => Err(error::validation(
                version,
                "functionVersion",
                "Member must satisfy regular expression pattern: (\\$LATEST|[0-9]+)",
            )),
        }
    }

    /// CreateAlias.
    pub fn create_alias(
        &self,
        r: &FunctionRef,
        body: &[u8],
    ) -> Result<AliasConfiguration, ApiError> {
        let req: AliasRequest = parse_body(body)?;
        self.latest_or_404(r)?;
        let name = req.name.ok_or_else(|| null_error("name"))?;
        self.check_alias_name(&name)?;
        let version = req
            .function_version
            .ok_or_else(|| null_error("functionVersion"))?;
        self.check_alias_version(&r.name, &version)?;
        let routing_config = match req.routing_config {
            Some(rc) => self.check_routing(&r.name, &version, rc)?,
            None => None,
        };
        if self.state.alias(&r.name, &name)?.is_some() {
            return Err(error::conflict(&format!(
                "Alias already exists: {}",
                self.arn(&r.name, Some(&name))
            )));
        }
        let alias = AliasConfiguration {
            alias_arn: self.arn(&r.name, Some(&name)),
            name,
            function_version: version,
            description: req.description.unwrap_or_default(),
            routing_config,
            revision_id: new_revision(),
        };
        self.state.put_alias(&r.name, &alias)?;
        Ok(alias)
    }

    /// A RoutingConfig as Lambda accepts it: at most one additional version, a published one
    /// other than the alias's own (which may not be `$LATEST`), weight 0.0–1.0. An empty map
    /// is no routing (`None`).
    fn check_routing(
        &self,
        function: &str,
        primary: &str,
        rc: AliasRoutingConfiguration,
    ) -> Result<Option<AliasRoutingConfiguration>, ApiError> {
        let weights = &rc.additional_version_weights;
        let Some((version, weight)) = weights.iter().next() else {
            return Ok(None);
        };
        for (v, w) in weights {
            if v.is_empty() || v.len() > 1024 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(error::validation(
                    v,
                    "routingConfig.additionalVersionWeights",
                    "Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [0-9]+]",
                ));
            }
            if !(0.0..=1.0).contains(w) {
                return Err(error::validation(
                    &w.to_string(),
                    "routingConfig.additionalVersionWeights",
                    "Map value must satisfy constraint: [Member must have value less than or equal to 1.0, Member must have value greater than or equal to 0.0]",
                ));
            }
        }
        if weights.len() > 1 {
            return Err(error::invalid_parameter(&format!(
                "An alias can route to one additional version; RoutingConfig.AdditionalVersionWeights names {}.",
                weights.len()
            )));
        }
        if primary == "$LATEST" {
            return Err(error::invalid_parameter(
                "$LATEST is not supported for an alias pointing to more than 1 version",
            ));
        }
        if version == primary {
            return Err(error::invalid_parameter(&format!(
                "The additional version {version} in RoutingConfig is the alias's own FunctionVersion; name a different version."
            )));
        }
        self.check_alias_version(function, version)?;
        tracing::debug!(function, primary, version, weight, "weighted alias");
        Ok(Some(rc))
    }

    fn alias_or_404(&self, r: &FunctionRef, alias: &str) -> Result<AliasConfiguration, ApiError> {
        self.latest_or_404(r)?;
        self.state.alias(&r.name, alias)?.ok_or_else(|| {
            error::not_found(&format!(
                "Cannot find alias arn: {}",
                self.arn(&r.name, Some(alias))
            ))
        })
    }

    /// GetAlias.
    pub fn get_alias(&self, r: &FunctionRef, alias: &str) -> Result<AliasConfiguration, ApiError> {
        self.alias_or_404(r, alias)
    }

    /// UpdateAlias.
    pub fn update_alias(
        &self,
        r: &FunctionRef,
        alias: &str,
        body: &[u8],
    ) -> Result<AliasConfiguration, ApiError> {
        let req: AliasRequest = parse_body(body)?;
        let mut a = self.alias_or_404(r, alias)?;
        if let Some(rev) = &req.revision_id {
            if *rev != a.revision_id {
                return Err(error::precondition_failed("GetFunction/GetAlias"));
            }
        }
        if let Some(v) = req.function_version {
            self.check_alias_version(&r.name, &v)?;
            a.function_version = v;
        }
        // A RoutingConfig given replaces the alias's (an empty map removes it); one not given
        // is kept, and checked again against a new FunctionVersion.
        if let Some(rc) = req.routing_config.or_else(|| a.routing_config.take()) {
            a.routing_config = self.check_routing(&r.name, &a.function_version, rc)?;
        }
        if let Some(d) = req.description {
            a.description = d;
        }
        a.revision_id = new_revision();
        self.state.put_alias(&r.name, &a)?;
        Ok(a)
    }

    /// DeleteAlias (204 even if absent, as Lambda).
    pub fn delete_alias(&self, r: &FunctionRef, alias: &str) -> Result<(), ApiError> {
        self.latest_or_404(r)?;
        self.state.delete_alias(&r.name, alias)?;
        Ok(())
    }

    /// ListAliases; `FunctionVersion` keeps the aliases that invoke that version (as their
    /// FunctionVersion or as the additional version of their RoutingConfig).
    pub fn list_aliases(
        &self,
        r: &FunctionRef,
        function_version: Option<&str>,
        marker: Option<&str>,
        max_items: Option<&str>,
    ) -> Result<ListAliasesResponse, ApiError> {
        self.latest_or_404(r)?;
        let max = parse_max_items(max_items)?;
        let mut all = self.state.aliases(&r.name)?;
        if let Some(v) = function_version {
            if !matches!(
                Qualifier::parse(v),
                Ok(Qualifier::Latest | Qualifier::Version(_))
            ) {
                return Err(error::validation(
                    v,
                    "functionVersion",
                    "Member must satisfy regular expression pattern: (\\$LATEST|[0-9]+)",
                ));
            }
            all.retain(|a| a.invokes(v));
        }
        let (aliases, next_marker) = paginate(all, marker, max)?;
        Ok(ListAliasesResponse {
            aliases,
            next_marker,
        })
    }

    // ---- Tags ------------------------------------------------------------------------------

    /// The function a tagging call names: `arn:PARTITION:lambda:REGION:ACCOUNT:function:NAME`
    /// (unqualified: tags belong to the function, not to a version or alias).
    fn tagged_function(&self, arn: &str) -> Result<FunctionRef, ApiError> {
        let parts: Vec<&str> = arn.split(':').collect();
        if parts.len() < 7 || parts[0] != "arn" || parts[2] != "lambda" || parts[5] != "function" {
            return Err(error::validation(
                arn,
                "resource",
                "Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*):lambda:[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{1}:\\d{12}:function:[a-zA-Z0-9-_]+",
            ));
        }
        let r = self.parse_name(arn, true)?;
        if r.qualifier.is_some() {
            return Err(error::invalid_parameter(&format!(
                "Tags apply to a function, not to one of its versions or aliases: use the unqualified ARN instead of {arn}"
            )));
        }
        self.latest_or_404(&r)?;
        Ok(r)
    }

    fn change_tags(
        &self,
        arn: &str,
        change: impl FnOnce(&mut std::collections::BTreeMap<String, String>) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        let r = self.tagged_function(arn)?;
        self.state
            .update_tags(&r.name, change)?
            .ok_or_else(|| error::function_not_found(&self.arn(&r.name, None)))
    }

    /// TagResource: adds or replaces tags.
    pub fn tag_resource(&self, arn: &str, body: &[u8]) -> Result<(), ApiError> {
        let req: TagResourceRequest = parse_body(body)?;
        let new = req.tags.ok_or_else(|| null_error("tags"))?;
        self.change_tags(arn, |tags| {
            tags.extend(new);
            check_tags(tags)
        })
    }

    /// UntagResource: removes the tags named by `keys` (absent ones are ignored).
    pub fn untag_resource(&self, arn: &str, keys: &[String]) -> Result<(), ApiError> {
        if keys.is_empty() {
            return Err(null_error("tagKeys"));
        }
        self.change_tags(arn, |tags| {
            for k in keys {
                tags.remove(k);
            }
            Ok(())
        })
    }

    /// ListTags.
    pub fn list_tags(&self, arn: &str) -> Result<ListTagsResponse, ApiError> {
        let r = self.tagged_function(arn)?;
        Ok(ListTagsResponse {
            tags: self.state.tags(&r.name)?.unwrap_or_default(),
        })
    }

    // ---- Concurrency and account ------------------------------------------------------------

    /// PutFunctionConcurrency.
    pub fn put_concurrency(&self, r: &FunctionRef, body: &[u8]) -> Result<Concurrency, ApiError> {
        let req: Concurrency = parse_body(body)?;
        self.latest_or_404(r)?;
        let n = req
            .reserved_concurrent_executions
            .ok_or_else(|| null_error("reservedConcurrentExecutions"))?;
        if n < 0 {
            return Err(error::validation(
                &n.to_string(),
                "reservedConcurrentExecutions",
                "Member must have value greater than or equal to 0",
            ));
        }
        let limit = self.config.account_concurrency;
        let others = self.state.total_reserved()?
            - self
                .state
                .reserved_concurrency(&r.name)?
                .flatten()
                .unwrap_or(0);
        let floor = min_unreserved(limit);
        if others + n as u64 + floor > limit {
            return Err(error::invalid_parameter(&format!(
                "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [{floor}]."
            )));
        }
        self.state
            .set_reserved_concurrency(&r.name, Some(n as u64))?;
        Ok(Concurrency {
            reserved_concurrent_executions: Some(n),
        })
    }

    /// GetFunctionConcurrency (`{}` when none is reserved).
    pub fn get_concurrency(&self, r: &FunctionRef) -> Result<Concurrency, ApiError> {
        self.latest_or_404(r)?;
        Ok(Concurrency {
            reserved_concurrent_executions: self
                .state
                .reserved_concurrency(&r.name)?
                .flatten()
                .map(|n| n as i64),
        })
    }

    /// DeleteFunctionConcurrency.
    pub fn delete_concurrency(&self, r: &FunctionRef) -> Result<(), ApiError> {
        self.latest_or_404(r)?;
        self.state.set_reserved_concurrency(&r.name, None)?;
        Ok(())
    }

    /// lambox's own operation, with no AWS counterpart (`GET /lambox/v1/functions/NAME/events`,
    /// what `lambox events` shows): the async events of `name`, oldest first, all or only
    /// those that failed for good. A deleted function's events are still listed; a name with
    /// neither a function nor events is ResourceNotFoundException.
    pub fn list_events(
        &self,
        name: &str,
        failed: bool,
    ) -> Result<Vec<crate::state::EventSummary>, ApiError> {
        let events = self.state.events(name, failed.then_some("failed"))?;
        if events.is_empty() && self.state.latest(name)?.is_none() {
            return Err(error::function_not_found(&self.arn(name, None)));
        }
        Ok(events)
    }

    /// GetAccountSettings.
    pub fn account_settings(&self) -> Result<AccountSettings, ApiError> {
        let limit = self.config.account_concurrency;
        let mut total = 0;
        let mut after = 0;
        loop {
            let rows = self.state.list_latest(after, 500)?;
            let Some((last, _)) = rows.last() else { break };
            after = *last;
            total += rows
                .iter()
                .map(|(_, r)| r.configuration.code_size)
                .sum::<u64>();
        }
        Ok(AccountSettings {
            account_limit: AccountLimit {
                total_code_size: 80_530_636_800,
                code_size_unzipped: 262_144_000,
                code_size_zipped: 52_428_800,
                concurrent_executions: limit,
                unreserved_concurrent_executions: limit
                    .saturating_sub(self.state.total_reserved()?),
            },
            account_usage: AccountUsage {
                total_code_size: total,
                function_count: self.state.function_count()?,
            },
        })
    }

    // ---- Asynchronous invocation settings ----------------------------------------------------

    /// The qualifier an event invoke config is keyed by, and its ARN (`$LATEST` qualified,
    /// as Lambda answers).
    fn eic_key(&self, r: &FunctionRef) -> Result<(String, String), ApiError> {
        let t = self.target(&FunctionRef {
            name: r.name.clone(),
            qualifier: match &r.qualifier {
                Some(Qualifier::Alias(_)) => None,
                q => q.clone(),
            },
            foreign: r.foreign,
        })?;
        let q = match &r.qualifier {
            Some(Qualifier::Alias(a)) => {
                self.alias_or_404(r, a)?;
                a.clone()
            }
            _ => t.version,
        };
        let arn = self.arn(&r.name, Some(&q));
        Ok((q, arn))
    }

    /// Put (`replace`) or UpdateFunctionEventInvokeConfig. Retries and event age are honoured
    /// by async invokes of that version ([`crate::invoke`]); destinations are refused.
    pub fn put_event_invoke_config(
        &self,
        r: &FunctionRef,
        body: &[u8],
        replace: bool,
    ) -> Result<FunctionEventInvokeConfig, ApiError> {
        let req: EventInvokeConfigRequest = parse_body(body)?;
        let (q, arn) = self.eic_key(r)?;
        if let Some(n) = req.maximum_retry_attempts {
            if !(0..=2).contains(&n) {
                return Err(error::validation(
                    &n.to_string(),
                    "maximumRetryAttempts",
                    if n < 0 {
                        "Member must have value greater than or equal to 0"
                    } else {
                        "Member must have value less than or equal to 2"
                    },
                ));
            }
        }
        if let Some(n) = req.maximum_event_age_in_seconds {
            if !(60..=21600).contains(&n) {
                return Err(error::validation(
                    &n.to_string(),
                    "maximumEventAgeInSeconds",
                    if n < 60 {
                        "Member must have value greater than or equal to 60"
                    } else {
                        "Member must have value less than or equal to 21600"
                    },
                ));
            }
        }
        if let Some(d) = &req.destination_config {
            for (which, target) in [("OnSuccess", &d.on_success), ("OnFailure", &d.on_failure)] {
                if let Some(arn) = target.get("Destination") {
                    self.check_destination(which, arn)?;
                }
            }
        }
        let old = if replace {
            None
        } else {
            Some(
                self.state
                    .event_invoke_config(&r.name, &q)?
                    .ok_or_else(|| {
                        error::not_found(&format!(
                            "The function {arn} doesn't have an EventInvokeConfig"
                        ))
                    })?,
            )
        };
        let config = FunctionEventInvokeConfig {
            last_modified: now_ms() as f64 / 1000.0,
            function_arn: arn,
            maximum_retry_attempts: req
                .maximum_retry_attempts
                .or(old.as_ref().and_then(|o| o.maximum_retry_attempts)),
            maximum_event_age_in_seconds: req
                .maximum_event_age_in_seconds
                .or(old.as_ref().and_then(|o| o.maximum_event_age_in_seconds)),
            destination_config: req
                .destination_config
                .or(old.map(|o| o.destination_config))
                .unwrap_or_default(),
        };
        self.state.put_event_invoke_config(&r.name, &q, &config)?;
        Ok(config)
    }

    /// A destination lambox can deliver to: a Lambda function's ARN (qualified or not) in
    /// lambox's account and region. Queues, topics, buses and buckets are refused.
    fn check_destination(&self, which: &str, arn: &str) -> Result<(), ApiError> {
        let parts: Vec<&str> = arn.split(':').collect();
        let lambda =
            parts.len() >= 7 && parts[0] == "arn" && parts[2] == "lambda" && parts[5] == "function";
        let r = if lambda {
            self.parse_name(arn, true).ok()
        } else {
            None
        };
        match r {
            Some(r) if !r.foreign => Ok(()),
            Some(_) => Err(error::invalid_parameter(&format!(
                "DestinationConfig.{which}: {arn} is a function of another account or region; lambox delivers asynchronous invocation records only to its own Lambda functions."
            ))),
            None => Err(error::invalid_parameter(&format!(
                "DestinationConfig.{which}: {arn} is not a Lambda function ARN; lambox delivers asynchronous invocation records only to Lambda functions (no SQS, SNS, EventBridge or S3 destinations)."
            ))),
        }
    }

    /// GetFunctionEventInvokeConfig.
    pub fn get_event_invoke_config(
        &self,
        r: &FunctionRef,
    ) -> Result<FunctionEventInvokeConfig, ApiError> {
        let (q, arn) = self.eic_key(r)?;
        self.state.event_invoke_config(&r.name, &q)?.ok_or_else(|| {
            error::not_found(&format!(
                "The function {arn} doesn't have an EventInvokeConfig"
            ))
        })
    }

    /// DeleteFunctionEventInvokeConfig.
    pub fn delete_event_invoke_config(&self, r: &FunctionRef) -> Result<(), ApiError> {
        let (q, arn) = self.eic_key(r)?;
        if !self.state.delete_event_invoke_config(&r.name, &q)? {
            return Err(error::not_found(&format!(
                "The function {arn} doesn't have an EventInvokeConfig"
            )));
        }
        Ok(())
    }

    /// The reserved concurrency of `name` and the account's total.
    pub(crate) fn concurrency_of(&self, name: &str) -> Result<(Option<u64>, u64), ApiError> {
        Ok((
            self.state.reserved_concurrency(name)?.flatten(),
            self.state.total_reserved()?,
        ))
    }

    /// Stops starting event runs (events not started stay `pending` for the next start), then
    /// waits until background work is done or `grace` has passed; returns what is left.
    pub async fn drain(&self, grace: Duration) -> usize {
        self.stopping.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let left = self.background_tasks();
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Lambda's tag rules (as for every AWS resource): at most 50 tags, keys of 1–128 and values
/// of at most 256 characters, and no key in the reserved `aws:` prefix.
fn check_tags(tags: &std::collections::BTreeMap<String, String>) -> Result<(), ApiError> {
    const MAX_TAGS: usize = 50;
    if tags.len() > MAX_TAGS {
        return Err(error::invalid_parameter(&format!(
            "A function can have at most {MAX_TAGS} tags; this request would give it {}.",
            tags.len()
        )));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 {
            return Err(error::invalid_parameter(&format!(
                "Tag key '{k}' must be 1 to 128 characters long."
            )));
        }
        if k.to_ascii_lowercase().starts_with("aws:") {
            return Err(error::invalid_parameter(&format!(
                "Tag key '{k}': keys starting with 'aws:' are reserved for AWS use."
            )));
        }
        if v.chars().count() > 256 {
            return Err(error::invalid_parameter(&format!(
                "The value of tag '{k}' must be at most 256 characters long."
            )));
        }
    }
    Ok(())
}

fn parse_max_items(max_items: Option<&str>) -> Result<usize, ApiError> {
    match max_items {
        None => Ok(50),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=10000).contains(&n) => Ok((n as usize).min(50)),
            Ok(n) => Err(error::validation(
                &n.to_string(),
                "maxItems",
                if n < 1 {
                    "Member must have value greater than or equal to 1"
                } else {
                    "Member must have value less than or equal to 10000"
                },
            )),
            Err(_) => Err(error::invalid_parameter(&format!("Invalid MaxItems: {s}"))),
        },
    }
}

/// Position-marker pagination over a small in-memory list.
fn paginate<T>(
    all: Vec<T>,
    marker: Option<&str>,
    max: usize,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let start: usize = match marker {
        None => 0,
        Some(m) => m
            .parse()
            .map_err(|_| error::invalid_parameter(&format!("Invalid marker: {m}")))?,
    };
    let total = all.len();
    let page: Vec<T> = all.into_iter().skip(start).take(max).collect();
    let end = start + page.len();
    Ok((page, (end < total).then(|| end.to_string())))
}
