//! Run stores of other backends, behind the engine's [`Store`](crate::engine::store::Store)
//! boundary: the aws backend's DynamoDB table ([`dynamodb`], cargo feature `aws`). The engine
//! never names them; [`crate::project`] builds the [`StoreAt`](crate::engine::store::StoreAt)
//! value from `state:` in `cartflow.yaml`.

#[cfg(feature = "aws")]
pub mod dynamodb;
