//! SNS publishes for the notifications of batch runs (the `sns:` notify target).

use aws_sdk_sns::error::ProvideErrorMetadata;
use aws_sdk_sns::types::MessageAttributeValue;

use super::{AwsEnv, AwsError};

/// A publish that failed, and whether a retry can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishError {
    /// What SNS (or the network) said.
    pub message: String,
    /// No such topic, no permission, a parameter SNS refuses: a retry cannot help.
    pub permanent: bool,
}

/// The error codes after which a publish is not retried.
const PERMANENT: &[&str] = &[
    "NotFound",
    "NotFoundException",
    "InvalidParameter",
    "InvalidParameterException",
    "InvalidParameterValue",
    "AuthorizationError",
    "AuthorizationErrorException",
    "InvalidSecurity",
];

/// SNS's subject: printable ASCII, one line, at most 100 characters.
pub fn subject(s: &str) -> String {
    let clean: String = s.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).take(100).collect();
    let clean = clean.trim().to_string();
    if clean.is_empty() { "cartflow".to_string() } else { clean }
}

/// Publishes `message` with `subject` and string attributes to `topic_arn`.
pub async fn publish(
    env: &AwsEnv,
    topic_arn: &str,
    subject_line: &str,
    message: &str,
    attributes: &[(&str, &str)],
) -> Result<(), PublishError> {
    let client = aws_sdk_sns::Client::new(&env.clients.sdk);
    let mut req = client.publish().topic_arn(topic_arn).subject(subject(subject_line)).message(message);
    for (k, v) in attributes {
        let attr = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(*v)
            .build()
            .map_err(|e| PublishError { message: format!("message attribute {k}: {e}"), permanent: true })?;
        req = req.message_attributes(*k, attr);
    }
    match req.send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let permanent = e.code().is_some_and(|c| PERMANENT.contains(&c));
            Err(PublishError { message: AwsError::new("sns:Publish", topic_arn, e).to_string(), permanent })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_one_printable_line_of_at_most_100_characters() {
        assert_eq!(subject("cartflow: task `a` failed\nnext line"), "cartflow: task `a` failed?next line");
        assert_eq!(subject(&"x".repeat(300)).len(), 100);
        assert_eq!(subject("\n\n"), "??");
        assert_eq!(subject("   "), "cartflow");
        assert_eq!(subject("é"), "?");
    }
}
