//! The aws backend's settings, `aws:` in `cartflow.yaml`: where the lake lives on S3, the Athena
//! workgroup, poll delays and the real-time stage's names. Plain data, read whether or not this
//! cartflow was built with the `aws` feature; credentials never appear here (they come from the
//! standard AWS chain).

use crate::duration::HumanDuration;

/// The aws backend's settings: `aws:` in `cartflow.yaml`. Where the lake lives and how often
/// to poll; never credentials (those come from the standard chain).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    /// The lake root, `s3://bucket/` or `s3://bucket/prefix/`.
    #[serde(default)]
    pub lake: Option<String>,
    /// A bucket (or prefix) per zone: the first folder of a lake path (`raw`, `staged`,
    /// `clean`, `enriched`, `curated`) maps here, without that folder.
    #[serde(default)]
    pub zones: std::collections::BTreeMap<String, String>,
    /// The Athena workgroup of the insight queries.
    #[serde(default = "default_workgroup")]
    pub athena_workgroup: String,
    /// Where Athena writes query results (`s3://…`); default: the workgroup's setting.
    #[serde(default)]
    pub athena_output: Option<String>,
    /// First delay between two polls of an AWS job; it grows by half each poll.
    #[serde(default = "default_poll")]
    pub poll: HumanDuration,
    /// The longest delay between two polls.
    #[serde(default = "default_max_poll")]
    pub max_poll: HumanDuration,
    /// S3 path-style addressing; default: on when `AWS_ENDPOINT_URL` points at an emulator.
    #[serde(default)]
    pub s3_path_style: Option<bool>,
    /// The real-time stage's resources (the `streaming_stage` kind).
    #[serde(default)]
    pub streaming: StreamingSettings,
}

/// The real-time stage on AWS: names (from one prefix, as `infra/` names them), the roles the
/// services assume, and the code bundles.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamingSettings {
    /// Name prefix: `{prefix}stream1`, `{prefix}stream2`, `{prefix}alerts` (table and topic),
    /// `{prefix}archive` (Firehose), `{prefix}detector` (Flink), `{prefix}alert-handler`
    /// (Lambda). Default `cartflow-`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The role Managed Flink assumes (read stream1, write stream2, read the bundle).
    #[serde(default)]
    pub flink_role_arn: Option<String>,
    /// The role Firehose assumes (read stream1, write the raw zone).
    #[serde(default)]
    pub firehose_role_arn: Option<String>,
    /// The role of the alert handler (read stream2, write the table, publish to the topic, and
    /// `sqs:SendMessage` to `{prefix}alert-handler-failures`, where Lambda sends the batches
    /// that still fail after their retries).
    #[serde(default)]
    pub lambda_role_arn: Option<String>,
    /// The alert handler's deployment package: a zip with `bootstrap` (e.g. from
    /// `cargo lambda build --release -p cartflow-streaming --features lambda --output-format zip`),
    /// or the `cartflow-alert-handler` binary itself (cartflow zips it as `bootstrap`).
    #[serde(default)]
    pub lambda_package: Option<std::path::PathBuf>,
    /// The Kinesis SQL connector jar bundled with the Flink application (`lib/`); Managed
    /// Flink needs it to read and write Kinesis.
    #[serde(default)]
    pub flink_connector_jar: Option<std::path::PathBuf>,
    /// Where the Flink application bundle is uploaded (`s3://…/`); default `{lake}/_code/`.
    #[serde(default)]
    pub code: Option<String>,
    /// The Managed Flink runtime, default `FLINK-1_20`.
    #[serde(default)]
    pub flink_runtime: Option<String>,
}

impl StreamingSettings {
    /// The prefix of every name.
    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or("cartflow-")
    }

    /// `{prefix}{what}`.
    pub fn name(&self, what: &str) -> String {
        format!("{}{what}", self.prefix())
    }
}

fn default_workgroup() -> String {
    "primary".into()
}
fn default_poll() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(10))
}
fn default_max_poll() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(60))
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            lake: None,
            zones: Default::default(),
            athena_workgroup: default_workgroup(),
            athena_output: None,
            poll: default_poll(),
            max_poll: default_max_poll(),
            s3_path_style: None,
            streaming: StreamingSettings::default(),
        }
    }
}

/// An S3 location: bucket and key prefix (no leading `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Loc {
    /// The bucket.
    pub bucket: String,
    /// The key or key prefix.
    pub key: String,
}

impl S3Loc {
    /// Parses `s3://bucket/key`.
    pub fn parse(uri: &str) -> Result<S3Loc, String> {
        let rest = uri.strip_prefix("s3://").ok_or_else(|| format!("`{uri}` is not an s3:// URI"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("`{uri}` has no bucket"));
        }
        Ok(S3Loc { bucket: bucket.into(), key: key.into() })
    }

    /// This location as a folder: the key ends with `/` (or is empty).
    pub fn dir(&self) -> S3Loc {
        let mut key = self.key.clone();
        if !key.is_empty() && !key.ends_with('/') {
            key.push('/');
        }
        S3Loc { bucket: self.bucket.clone(), key }
    }

    /// A path under this folder.
    pub fn join(&self, rel: &str) -> S3Loc {
        let d = self.dir();
        S3Loc { bucket: d.bucket, key: format!("{}{}", d.key, rel.trim_start_matches('/')) }
    }

    /// `s3://bucket/key`.
    pub fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

impl std::fmt::Display for S3Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri())
    }
}

impl AwsSettings {
    /// Where a lake path (`raw/events/dt=2019-10-01`) lives on S3.
    pub fn locate(&self, rel: &str) -> Result<S3Loc, String> {
        let rel = rel.trim_matches('/');
        let (zone, rest) = rel.split_once('/').unwrap_or((rel, ""));
        if let Some(root) = self.zones.get(zone) {
            return Ok(S3Loc::parse(root)?.join(rest));
        }
        let lake = self.lake.as_deref().ok_or_else(|| {
            format!(
                "the aws backend does not know where `{rel}` lives: set `aws.lake: s3://bucket/` (or `aws.zones.{zone}`) in cartflow.yaml"
            )
        })?;
        Ok(S3Loc::parse(lake)?.join(rel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lake_paths_map_to_the_lake_or_to_zone_buckets() {
        let mut s = AwsSettings { lake: Some("s3://lake/root".into()), ..AwsSettings::default() };
        assert_eq!(s.locate("raw/events/dt=2019-10-01").expect("loc").uri(), "s3://lake/root/raw/events/dt=2019-10-01");
        s.zones.insert("raw".into(), "s3://raw-bucket/".into());
        assert_eq!(s.locate("raw/events/dt=2019-10-01").expect("loc").uri(), "s3://raw-bucket/events/dt=2019-10-01");
        assert_eq!(s.locate("curated/top").expect("loc").uri(), "s3://lake/root/curated/top");
        let none = AwsSettings::default();
        assert!(none.locate("raw/events").expect_err("no lake").contains("aws.lake"));
        assert!(S3Loc::parse("lake/x").is_err() && S3Loc::parse("s3:///x").is_err());
    }
}
