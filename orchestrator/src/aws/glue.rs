//! The Glue Data Catalog: tables and partitions, as the Athena swap and the dashboard's mirror
//! use them. (Crawlers and job runs are in the `glue_crawler` and `glue_job` kinds.)

use aws_sdk_glue::Client;
use aws_sdk_glue::types::{PartitionInput, Table, TableInput};

use super::AwsError;

/// A catalog table, as the swap needs it.
#[derive(Debug, Clone)]
pub struct CatalogTable {
    table: Table,
}

impl CatalogTable {
    /// Its storage location.
    pub fn location(&self) -> Option<&str> {
        self.table.storage_descriptor().and_then(|s| s.location())
    }

    /// Its partition columns.
    pub fn partition_keys(&self) -> Vec<String> {
        self.table.partition_keys().iter().map(|c| c.name().to_string()).collect()
    }

    /// Its data columns, `name type`.
    pub fn columns(&self) -> Vec<String> {
        self.column_pairs().into_iter().map(|(n, t)| format!("{n} {t}")).collect()
    }

    /// Its data columns as (name, type).
    pub fn column_pairs(&self) -> Vec<(String, String)> {
        self.table
            .storage_descriptor()
            .map(|s| {
                s.columns().iter().map(|c| (c.name().to_string(), c.r#type().unwrap_or("string").to_string())).collect()
            })
            .unwrap_or_default()
    }

    /// Its partition columns as (name, type).
    pub fn partition_key_pairs(&self) -> Vec<(String, String)> {
        self.table
            .partition_keys()
            .iter()
            .map(|c| (c.name().to_string(), c.r#type().unwrap_or("string").to_string()))
            .collect()
    }

    /// The table as input for CreateTable/UpdateTable under another name, at `location`.
    fn input(&self, name: &str, location: &str) -> Result<TableInput, AwsError> {
        let t = &self.table;
        let mut sd = t.storage_descriptor().cloned();
        if let Some(sd) = sd.as_mut() {
            sd.location = Some(location.to_string());
        }
        TableInput::builder()
            .name(name)
            .set_description(t.description().map(str::to_string))
            .set_table_type(t.table_type().map(str::to_string))
            .set_parameters(t.parameters().cloned())
            .set_storage_descriptor(sd)
            .set_partition_keys(Some(t.partition_keys().to_vec()))
            .build()
            .map_err(|e| AwsError::new("glue:TableInput", name, e))
    }
}

/// A table of the catalog, or `None` when it does not exist.
pub async fn get_table(client: &Client, db: &str, name: &str) -> Result<Option<CatalogTable>, AwsError> {
    match client.get_table().database_name(db).name(name).send().await {
        Ok(out) => Ok(out.table().cloned().map(|table| CatalogTable { table })),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_entity_not_found_exception()) => Ok(None),
        Err(e) => Err(AwsError::new("glue:GetTable", format!("{db}.{name}"), e)),
    }
}

/// Creates `db.name` like `like`, at `location`, or points the existing table there
/// (UpdateTable: atomic for readers, and Glue keeps the previous version).
pub async fn put_table(
    client: &Client,
    db: &str,
    name: &str,
    like: &CatalogTable,
    location: &str,
    exists: bool,
) -> Result<(), AwsError> {
    let input = like.input(name, location)?;
    if exists {
        client
            .update_table()
            .database_name(db)
            .table_input(input)
            .send()
            .await
            .map_err(|e| AwsError::new("glue:UpdateTable", format!("{db}.{name}"), e))?;
    } else {
        client
            .create_table()
            .database_name(db)
            .table_input(input)
            .send()
            .await
            .map_err(|e| AwsError::new("glue:CreateTable", format!("{db}.{name}"), e))?;
    }
    Ok(())
}

/// Drops a table from the catalog (its data stays); a missing table is fine.
pub async fn delete_table(client: &Client, db: &str, name: &str) -> Result<(), AwsError> {
    match client.delete_table().database_name(db).name(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_entity_not_found_exception()) => Ok(()),
        Err(e) => Err(AwsError::new("glue:DeleteTable", format!("{db}.{name}"), e)),
    }
}

/// One partition: its values and location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLoc {
    /// The partition values, in key order.
    pub values: Vec<String>,
    /// Where its data lives.
    pub location: String,
}

/// Every partition of a table.
pub async fn partitions(client: &Client, db: &str, table: &str) -> Result<Vec<PartitionLoc>, AwsError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .get_partitions()
            .database_name(db)
            .table_name(table)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| AwsError::new("glue:GetPartitions", format!("{db}.{table}"), e))?;
        for p in page.partitions() {
            out.push(PartitionLoc {
                values: p.values().to_vec(),
                location: p.storage_descriptor().and_then(|s| s.location()).unwrap_or_default().to_string(),
            });
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok(out)
}

/// Points partition `values` of `db.table` at `location` (creating it if needed), with the
/// table's storage format. Returns the partition's previous location.
pub async fn put_partition(
    client: &Client,
    db: &str,
    table: &CatalogTable,
    values: &[String],
    location: &str,
) -> Result<Option<String>, AwsError> {
    let name = table.table.name();
    let what = format!("{db}.{name} partition {}", values.join("/"));
    let previous = match client
        .get_partition()
        .database_name(db)
        .table_name(name)
        .set_partition_values(Some(values.to_vec()))
        .send()
        .await
    {
        Ok(out) => Some(
            out.partition().and_then(|p| p.storage_descriptor()).and_then(|s| s.location()).unwrap_or("").to_string(),
        ),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_entity_not_found_exception()) => None,
        Err(e) => return Err(AwsError::new("glue:GetPartition", what, e)),
    };
    let mut sd = table.table.storage_descriptor().cloned();
    if let Some(sd) = sd.as_mut() {
        sd.location = Some(location.to_string());
    }
    let input = PartitionInput::builder().set_values(Some(values.to_vec())).set_storage_descriptor(sd).build();
    if previous.is_some() {
        client
            .update_partition()
            .database_name(db)
            .table_name(name)
            .set_partition_value_list(Some(values.to_vec()))
            .partition_input(input)
            .send()
            .await
            .map_err(|e| AwsError::new("glue:UpdatePartition", &what, e))?;
    } else {
        client
            .create_partition()
            .database_name(db)
            .table_name(name)
            .partition_input(input)
            .send()
            .await
            .map_err(|e| AwsError::new("glue:CreatePartition", &what, e))?;
    }
    Ok(previous)
}
