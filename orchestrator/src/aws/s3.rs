//! S3: listing a prefix, downloading it to a folder, uploading files, deleting objects.

use std::path::{Path, PathBuf};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use super::{AwsError, S3Loc};

/// One object.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: i64,
    /// When S3 last wrote it (epoch seconds, S3's clock), when the listing says.
    pub last_modified: Option<f64>,
}

/// Every page of a listing under `loc` (as a folder): the objects, and with a delimiter the
/// "folders" (common prefixes) directly under it.
async fn list_all(
    client: &Client,
    loc: &S3Loc,
    delimiter: Option<&str>,
) -> Result<(Vec<Object>, Vec<String>), AwsError> {
    let dir = loc.dir();
    let (mut objects, mut folders) = (Vec::new(), Vec::new());
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(&dir.bucket)
            .prefix(&dir.key)
            .set_delimiter(delimiter.map(str::to_string))
            .set_continuation_token(token.take())
            .send()
            .await
            .map_err(|e| AwsError::new("s3:ListObjectsV2", dir.uri(), e))?;
        for o in page.contents() {
            if let Some(key) = o.key() {
                objects.push(Object {
                    key: key.to_string(),
                    size: o.size().unwrap_or(0),
                    last_modified: o.last_modified().map(|t| t.as_secs_f64()),
                });
            }
        }
        folders.extend(page.common_prefixes().iter().filter_map(|p| p.prefix().map(str::to_string)));
        match page.next_continuation_token() {
            Some(t) if page.is_truncated().unwrap_or(false) => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok((objects, folders))
}

/// Every object under `loc` (as a folder), in key order.
pub async fn list(client: &Client, loc: &S3Loc) -> Result<Vec<Object>, AwsError> {
    Ok(list_all(client, loc, None).await?.0)
}

/// The "folders" directly under `loc`: common prefixes with delimiter `/`, each ending in `/`.
pub async fn folders(client: &Client, loc: &S3Loc) -> Result<Vec<String>, AwsError> {
    Ok(list_all(client, loc, Some("/")).await?.1)
}

/// Whether a key names a data object: no file or folder under it starts with `_` or `.`
/// (Spark's `_SUCCESS`, Firehose's and Hive's temporary files).
pub fn is_data(prefix: &str, key: &str) -> bool {
    !key.ends_with('/') && !key[prefix.len().min(key.len())..].split('/').any(|s| s.starts_with(['_', '.']))
}

/// Downloads every data object under `loc` into `dir`, keeping the key's path below `loc`.
/// Returns the files written.
pub async fn download(client: &Client, loc: &S3Loc, dir: &Path) -> Result<Vec<PathBuf>, AwsError> {
    let prefix = loc.dir();
    let mut out = Vec::new();
    for o in list(client, &prefix).await? {
        if !is_data(&prefix.key, &o.key) {
            continue;
        }
        let rel = &o.key[prefix.key.len()..];
        let path = dir.join(rel);
        let resource = format!("s3://{}/{}", prefix.bucket, o.key);
        let obj = client
            .get_object()
            .bucket(&prefix.bucket)
            .key(&o.key)
            .send()
            .await
            .map_err(|e| AwsError::new("s3:GetObject", &resource, e))?;
        let bytes = obj.body.collect().await.map_err(|e| AwsError::new("s3:GetObject", &resource, e))?.into_bytes();
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| AwsError::new("s3:GetObject", &resource, e))?;
        }
        std::fs::write(&path, &bytes).map_err(|e| AwsError::new("s3:GetObject", &resource, e))?;
        out.push(path);
    }
    Ok(out)
}

/// Uploads one file to `loc` (a full key).
pub async fn upload(client: &Client, file: &Path, loc: &S3Loc) -> Result<(), AwsError> {
    let body = ByteStream::from_path(file).await.map_err(|e| AwsError::new("s3:PutObject", loc.uri(), e))?;
    client
        .put_object()
        .bucket(&loc.bucket)
        .key(&loc.key)
        .body(body)
        .send()
        .await
        .map_err(|e| AwsError::new("s3:PutObject", loc.uri(), e))?;
    Ok(())
}

/// Writes a small object.
pub async fn put_bytes(client: &Client, loc: &S3Loc, bytes: Vec<u8>) -> Result<(), AwsError> {
    client
        .put_object()
        .bucket(&loc.bucket)
        .key(&loc.key)
        .body(ByteStream::from(bytes))
        .send()
        .await
        .map_err(|e| AwsError::new("s3:PutObject", loc.uri(), e))?;
    Ok(())
}

/// Deletes these keys of `bucket` (1000 per request); errors name the first key that failed.
pub async fn delete(client: &Client, bucket: &str, keys: &[String]) -> Result<(), AwsError> {
    for chunk in keys.chunks(1000) {
        let ids = chunk
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AwsError::new("s3:DeleteObjects", bucket, e))?;
        let delete = Delete::builder()
            .set_objects(Some(ids))
            .quiet(true)
            .build()
            .map_err(|e| AwsError::new("s3:DeleteObjects", bucket, e))?;
        let out = client
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| AwsError::new("s3:DeleteObjects", format!("s3://{bucket}/{}", chunk[0]), e))?;
        if let Some(err) = out.errors().first() {
            return Err(AwsError {
                call: "s3:DeleteObjects",
                resource: format!("s3://{bucket}/{}", err.key().unwrap_or_default()),
                message: format!("{}: {}", err.code().unwrap_or_default(), err.message().unwrap_or_default()),
            });
        }
    }
    Ok(())
}

/// Deletes every object under `loc` (as a folder).
pub async fn delete_prefix(client: &Client, loc: &S3Loc) -> Result<usize, AwsError> {
    let keys: Vec<String> = list(client, loc).await?.into_iter().map(|o| o.key).collect();
    delete(client, &loc.bucket, &keys).await?;
    Ok(keys.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_objects_are_not_data() {
        let p = "raw/events/dt=2019-10-01/";
        assert!(is_data(p, "raw/events/dt=2019-10-01/hour=00/a.gz"));
        assert!(!is_data(p, "raw/events/dt=2019-10-01/_SUCCESS"));
        assert!(!is_data(p, "raw/events/dt=2019-10-01/.tmp/a.gz"));
        assert!(!is_data(p, "raw/events/dt=2019-10-01/hour=00/"));
        // Only the part below the prefix counts: `_` in the prefix itself is fine.
        assert!(is_data("_lake/x/", "_lake/x/a.parquet"));
    }
}
