//! The AWS half of the alert handler (DynamoDB store, SNS notifier, EMF metrics) against moto.

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use cartflow_e2e::Moto;
use cartflow_streaming::alert::Alert;
use cartflow_streaming::aws::{DynamoAlerts, EmfMetrics, SnsNotifier};
use cartflow_streaming::handler::handle;
use cartflow_streaming::rules::Severity;

fn alert(key: &str, value: u64, notify: bool) -> Alert {
    Alert {
        rule: "ddos_user_burst".into(),
        key_field: "user_id".into(),
        key: key.into(),
        window_start_ms: 1_569_888_010_000,
        window_end_ms: 1_569_888_020_000,
        value,
        first_event_ms: 1_569_888_011_000,
        threshold: 20,
        severity: Severity::High,
        notify,
    }
}

#[test]
fn the_lambda_handler_stores_once_in_dynamodb_and_notifies_once_through_sns() {
    let Some(moto) = Moto::start() else { return };
    let setup = moto.boto3(
        "import boto3\n\
         boto3.client('dynamodb').create_table(TableName='alerts', KeySchema=[{'AttributeName':'id','KeyType':'HASH'}],\n\
           AttributeDefinitions=[{'AttributeName':'id','AttributeType':'S'}], BillingMode='PAY_PER_REQUEST')\n\
         sns = boto3.client('sns'); sqs = boto3.client('sqs')\n\
         topic = sns.create_topic(Name='alerts')['TopicArn']\n\
         q = sqs.create_queue(QueueName='inbox')['QueueUrl']\n\
         arn = sqs.get_queue_attributes(QueueUrl=q, AttributeNames=['QueueArn'])['Attributes']['QueueArn']\n\
         sns.subscribe(TopicArn=topic, Protocol='sqs', Endpoint=arn)\n\
         print(topic)",
    );
    let topic = setup.trim().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let creds = Credentials::new("testing", "testing", None, None, "test");
    let ddb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&moto.endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(creds.clone())
            .build(),
    );
    let sns = aws_sdk_sns::Client::from_conf(
        aws_sdk_sns::Config::builder()
            .behavior_version(aws_sdk_sns::config::BehaviorVersion::latest())
            .endpoint_url(&moto.endpoint)
            .region(aws_sdk_sns::config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .build(),
    );
    let mut store = DynamoAlerts::new(ddb, "alerts", rt.handle().clone());
    let records = [alert("1", 30, false).to_json(), alert("2", 300, true).to_json(), "not an alert".to_string()];
    let refs: Vec<&[u8]> = records.iter().map(|s| s.as_bytes()).collect();
    let mut metrics = EmfMetrics::default();

    // SNS answers with an error (no such topic): the invocation fails and Lambda retries.
    let mut broken = SnsNotifier::new(sns.clone(), &format!("{topic}-missing"), rt.handle().clone());
    let e = handle(&refs, &mut store, &mut broken, &mut metrics).expect_err("publish fails");
    assert!(e.to_string().starts_with("SNS Publish on arn:aws:sns:"), "{e}");

    // The retried batch: nothing stored twice, the notification goes out once.
    let mut notifier = SnsNotifier::new(sns, &topic, rt.handle().clone());
    let rep = handle(&refs, &mut store, &mut notifier, &mut metrics).expect("retry");
    assert_eq!((rep.received, rep.stored, rep.duplicates, rep.notified, rep.invalid), (3, 0, 2, 1, 1));
    let rep = handle(&refs, &mut store, &mut notifier, &mut metrics).expect("redelivery");
    assert_eq!((rep.stored, rep.duplicates, rep.notified), (0, 2, 0));
    let line = metrics.line("cartflow", 0);
    let emf: serde_json::Value = serde_json::from_str(&line).expect("emf");
    assert_eq!(emf["_aws"]["CloudWatchMetrics"][0]["Namespace"], "cartflow");

    let check = moto.boto3(
        "import boto3, json\n\
         items = boto3.client('dynamodb').scan(TableName='alerts')['Items']\n\
         print(len(items), sorted((i['key']['S'], i['value']['N'], i['notified']['BOOL']) for i in items))\n\
         sqs = boto3.client('sqs'); q = sqs.get_queue_url(QueueName='inbox')['QueueUrl']\n\
         msgs = sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10).get('Messages', [])\n\
         print(len(msgs), [json.loads(json.loads(m['Body'])['Message'])['key'] for m in msgs])\n\
         print('dedupe', [json.loads(m['Body'])['MessageAttributes']['dedupe_key']['Value'] for m in msgs])",
    );
    let mut lines = check.lines();
    assert_eq!(lines.next(), Some("2 [('1', '30', False), ('2', '300', True)]"), "{check}");
    assert_eq!(lines.next(), Some("1 ['2']"), "one notification, for the alert above 100: {check}");
    let want = format!("dedupe ['{}']", alert("2", 300, true).id());
    assert_eq!(lines.next(), Some(want.as_str()), "the alert's id as the message's dedupe key: {check}");
}
