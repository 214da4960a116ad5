//! The table as `template.yaml` defines it, created on any DynamoDB endpoint.

use aws_sdk_dynamodb::{
    error::SdkError,
    operation::create_table::CreateTableError,
    types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
        Projection, ProjectionType, ScalarAttributeType,
    },
    Client,
};
use serde::Deserialize;

/// The deployed template, read at compile time.
pub const TEMPLATE: &str = include_str!("../template.yaml");

/// `Resources.ChatTable.Properties`, the parts that shape the keys.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TableDefinition {
    pub attribute_definitions: Vec<AttrDef>,
    pub key_schema: Vec<KeyDef>,
    #[serde(default)]
    pub global_secondary_indexes: Vec<IndexDef>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttrDef {
    pub attribute_name: String,
    pub attribute_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyDef {
    pub attribute_name: String,
    pub key_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IndexDef {
    pub index_name: String,
    pub key_schema: Vec<KeyDef>,
    pub projection: ProjectionDef,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProjectionDef {
    pub projection_type: String,
    #[serde(default)]
    pub non_key_attributes: Vec<String>,
}

impl TableDefinition {
    /// The `ChatTable` of the bundled `template.yaml`.
    pub fn from_template() -> Result<Self, String> {
        Self::parse(TEMPLATE)
    }

    pub fn parse(template: &str) -> Result<Self, String> {
        // CloudFormation tags (!Ref, !Sub ...) elsewhere in the template
        // parse as tagged values and are never looked at.
        let doc: serde_yaml::Value =
            serde_yaml::from_str(template).map_err(|e| format!("template.yaml: {e}"))?;
        let props = doc
            .get("Resources")
            .and_then(|r| r.get("ChatTable"))
            .and_then(|t| t.get("Properties"))
            .ok_or("template.yaml has no Resources.ChatTable.Properties")?;
        serde_yaml::from_value(props.clone()).map_err(|e| format!("ChatTable properties: {e}"))
    }

    pub async fn create(
        &self,
        client: &Client,
        name: &str,
    ) -> Result<(), SdkError<CreateTableError>> {
        let key = |k: &KeyDef| {
            KeySchemaElement::builder()
                .attribute_name(&k.attribute_name)
                .key_type(KeyType::from(k.key_type.as_str()))
                .build()
                .expect("name and type are set")
        };
        let mut req = client
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .set_key_schema(Some(self.key_schema.iter().map(key).collect()));
        for a in &self.attribute_definitions {
            req = req.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(&a.attribute_name)
                    .attribute_type(ScalarAttributeType::from(a.attribute_type.as_str()))
                    .build()
                    .expect("name and type are set"),
            );
        }
        for i in &self.global_secondary_indexes {
            let projection = Projection::builder()
                .projection_type(ProjectionType::from(i.projection.projection_type.as_str()))
                .set_non_key_attributes(
                    (!i.projection.non_key_attributes.is_empty())
                        .then(|| i.projection.non_key_attributes.clone()),
                )
                .build();
            req = req.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(&i.index_name)
                    .set_key_schema(Some(i.key_schema.iter().map(key).collect()))
                    .projection(projection)
                    .build()
                    .expect("name and keys are set"),
            );
        }
        req.send().await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_shared::store::keys;

    #[test]
    fn template_table_matches_the_key_formats() {
        let def = TableDefinition::from_template().unwrap();
        let names: Vec<_> = def
            .key_schema
            .iter()
            .map(|k| k.attribute_name.as_str())
            .collect();
        assert_eq!(names, [keys::PK, keys::SK]);
        let gsi = &def.global_secondary_indexes[0];
        assert_eq!(gsi.index_name, keys::GSI1);
        let names: Vec<_> = gsi
            .key_schema
            .iter()
            .map(|k| k.attribute_name.as_str())
            .collect();
        assert_eq!(names, [keys::GSI1PK, keys::GSI1SK]);
    }
}
