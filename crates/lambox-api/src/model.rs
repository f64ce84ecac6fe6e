//! Wire types of the Lambda API (`2015-03-31`, REST-JSON, PascalCase members), defined once
//! and used both to parse requests and to render responses. Members follow botocore's
//! `lambda/2015-03-31/service-2.json`. Request members lambox ignores (VpcConfig, Layers,
//! TracingConfig, …) are accepted and dropped, as serde ignores unknown members.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `Environment` in requests (and `EnvironmentResponse` in responses: same members).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Environment {
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
}

/// `ImageConfig`: overrides of the image's ENTRYPOINT, CMD and WORKDIR.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_point: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
}

/// `ImageConfigResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfigResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_config: Option<ImageConfig>,
}

/// `EphemeralStorage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EphemeralStorage {
    pub size: i64,
}

/// `FunctionCode` of CreateFunction.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionCode {
    pub image_uri: Option<String>,
    pub zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
}

/// CreateFunction's body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateFunctionRequest {
    pub function_name: Option<String>,
    pub role: Option<String>,
    pub code: Option<FunctionCode>,
    pub package_type: Option<String>,
    pub runtime: Option<String>,
    pub handler: Option<String>,
    pub description: Option<String>,
    pub timeout: Option<i64>,
    pub memory_size: Option<i64>,
    pub publish: Option<bool>,
    pub environment: Option<Environment>,
    pub image_config: Option<ImageConfig>,
    pub architectures: Option<Vec<String>>,
    pub ephemeral_storage: Option<EphemeralStorage>,
    pub tags: Option<BTreeMap<String, String>>,
}

/// UpdateFunctionConfiguration's body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateFunctionConfigurationRequest {
    pub role: Option<String>,
    pub handler: Option<String>,
    pub runtime: Option<String>,
    pub description: Option<String>,
    pub timeout: Option<i64>,
    pub memory_size: Option<i64>,
    pub environment: Option<Environment>,
    pub image_config: Option<ImageConfig>,
    pub ephemeral_storage: Option<EphemeralStorage>,
    pub revision_id: Option<String>,
}

/// UpdateFunctionCode's body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateFunctionCodeRequest {
    pub image_uri: Option<String>,
    pub zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    pub architectures: Option<Vec<String>>,
    pub publish: Option<bool>,
    pub dry_run: Option<bool>,
    pub revision_id: Option<String>,
}

/// PublishVersion's body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PublishVersionRequest {
    pub code_sha256: Option<String>,
    pub description: Option<String>,
    pub revision_id: Option<String>,
}

/// CreateAlias's body (UpdateAlias takes the same members but `Name`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasRequest {
    pub name: Option<String>,
    pub function_version: Option<String>,
    pub description: Option<String>,
    pub routing_config: Option<AliasRoutingConfiguration>,
    pub revision_id: Option<String>,
}

/// `AliasRoutingConfiguration`: the second version of a weighted alias and the share of
/// invokes (0.0–1.0) it gets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasRoutingConfiguration {
    #[serde(default)]
    pub additional_version_weights: BTreeMap<String, f64>,
}

/// `AliasConfiguration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasConfiguration {
    pub alias_arn: String,
    pub name: String,
    pub function_version: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_config: Option<AliasRoutingConfiguration>,
    pub revision_id: String,
}

impl AliasConfiguration {
    /// Whether invokes of this alias may run `version` (its FunctionVersion, or the additional
    /// version of its RoutingConfig).
    pub fn invokes(&self, version: &str) -> bool {
        self.function_version == version
            || self
                .routing_config
                .as_ref()
                .is_some_and(|rc| rc.additional_version_weights.contains_key(version))
    }
}

/// PutFunctionConcurrency's body and Get/PutFunctionConcurrency's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Concurrency {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_concurrent_executions: Option<i64>,
}

/// `DestinationConfig` (`OnSuccess`/`OnFailure`, each `{Destination}`; lambox delivers to
/// Lambda function ARNs only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DestinationConfig {
    #[serde(default)]
    pub on_success: BTreeMap<String, String>,
    #[serde(default)]
    pub on_failure: BTreeMap<String, String>,
}

/// Put/UpdateFunctionEventInvokeConfig's body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EventInvokeConfigRequest {
    pub maximum_retry_attempts: Option<i64>,
    pub maximum_event_age_in_seconds: Option<i64>,
    pub destination_config: Option<DestinationConfig>,
}

/// `FunctionEventInvokeConfig` (`LastModified` in epoch seconds, as rest-json timestamps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionEventInvokeConfig {
    pub last_modified: f64,
    pub function_arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_retry_attempts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_event_age_in_seconds: Option<i64>,
    pub destination_config: DestinationConfig,
}

/// `TracingConfigResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TracingConfig {
    pub mode: String,
}

/// `LoggingConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LoggingConfig {
    pub log_format: String,
    pub log_group: String,
}

/// `FunctionConfiguration`, as stored and as answered. `FunctionArn` is filled in from the
/// configured account and region when answering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionConfiguration {
    pub function_name: String,
    #[serde(default)]
    pub function_arn: String,
    pub role: String,
    pub code_size: u64,
    pub description: String,
    pub timeout: i64,
    pub memory_size: i64,
    pub last_modified: String,
    pub code_sha256: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    pub tracing_config: TracingConfig,
    pub revision_id: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason_code: Option<String>,
    pub last_update_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_status_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_status_reason_code: Option<String>,
    pub package_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_config_response: Option<ImageConfigResponse>,
    pub architectures: Vec<String>,
    pub ephemeral_storage: EphemeralStorage,
    pub logging_config: LoggingConfig,
}

/// `FunctionCodeLocation` of GetFunction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionCodeLocation {
    pub repository_type: String,
    pub image_uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_image_uri: Option<String>,
}

/// GetFunction's answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetFunctionResponse {
    pub configuration: FunctionConfiguration,
    pub code: FunctionCodeLocation,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
}

/// ListFunctions' answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListFunctionsResponse {
    pub functions: Vec<FunctionConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// ListVersionsByFunction's answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListVersionsResponse {
    pub versions: Vec<FunctionConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// ListAliases' answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListAliasesResponse {
    pub aliases: Vec<AliasConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// TagResource's body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagResourceRequest {
    pub tags: Option<BTreeMap<String, String>>,
}

/// ListTags' answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListTagsResponse {
    pub tags: BTreeMap<String, String>,
}

/// `AccountLimit`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccountLimit {
    pub total_code_size: u64,
    pub code_size_unzipped: u64,
    pub code_size_zipped: u64,
    pub concurrent_executions: u64,
    pub unreserved_concurrent_executions: u64,
}

/// `AccountUsage`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccountUsage {
    pub total_code_size: u64,
    pub function_count: u64,
}

/// GetAccountSettings' answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccountSettings {
    pub account_limit: AccountLimit,
    pub account_usage: AccountUsage,
}

/// What lambox keeps for a function version beyond its `FunctionConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VersionRecord {
    pub configuration: FunctionConfiguration,
    /// The ImageUri as given.
    pub image_uri: String,
    /// `REGISTRY/REPO@sha256:…`, once resolved.
    #[serde(default)]
    pub resolved_image_uri: Option<String>,
    /// The ImageConfig as given (the response shows it as `ImageConfigResponse`).
    #[serde(default)]
    pub image_config: ImageConfig,
}

/// Lambda's `LastModified` format, `2024-01-31T12:34:56.789+0000`, for a Unix time in ms.
pub fn last_modified(unix_ms: u128) -> String {
    format!("{}+0000", date_time(unix_ms))
}

/// ISO 8601 UTC with milliseconds, `2024-01-31T12:34:56.789Z` (the `timestamp` of an
/// invocation record), for a Unix time in ms.
pub fn timestamp_utc(unix_ms: u128) -> String {
    format!("{}Z", date_time(unix_ms))
}

/// `2024-01-31T12:34:56.789`, for a Unix time in ms.
fn date_time(unix_ms: u128) -> String {
    let iso = crate::logs::utc(i64::try_from(unix_ms).unwrap_or(i64::MAX));
    iso.trim_end_matches('Z').to_owned()
}

/// A minimal Active `$LATEST` record of function `name` at RevisionId `revision`.
#[cfg(test)]
pub(crate) fn sample_record(name: &str, revision: &str) -> VersionRecord {
    serde_json::from_value(serde_json::json!({
        "Configuration": {
            "FunctionName": name, "Role": "r", "CodeSize": 0, "Description": "",
            "Timeout": 3, "MemorySize": 128, "LastModified": "", "CodeSha256": "ab".repeat(32),
            "Version": "$LATEST", "TracingConfig": {"Mode": "PassThrough"},
            "RevisionId": revision, "State": "Active", "LastUpdateStatus": "Successful",
            "PackageType": "Image", "Architectures": ["x86_64"],
            "EphemeralStorage": {"Size": 512},
            "LoggingConfig": {"LogFormat": "Text", "LogGroup": format!("/aws/lambda/{name}")}
        },
        "ImageUri": "oci:x"
    }))
    .expect("sample record")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_modified_is_lambdas_format() {
        assert_eq!(last_modified(0), "1970-01-01T00:00:00.000+0000");
        assert_eq!(
            last_modified(1_709_210_096_789),
            "2024-02-29T12:34:56.789+0000"
        );
        assert_eq!(timestamp_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp_utc(1_709_210_096_789), "2024-02-29T12:34:56.789Z");
    }
}
