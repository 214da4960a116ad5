//! Creates `TABLE_NAME` with template.yaml's key schema and index on the
//! DynamoDB the standard AWS configuration points at (DynamoDB Local via
//! `AWS_ENDPOINT_URL_DYNAMODB`). An existing table is left as it is.

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use chat_service_dev::table::TableDefinition;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::var("TABLE_NAME").map_err(|_| "TABLE_NAME is required")?;
    let aws = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let client = aws_sdk_dynamodb::Client::new(&aws);
    match TableDefinition::from_template()?
        .create(&client, &name)
        .await
    {
        Ok(()) => eprintln!("created table {name}"),
        Err(e)
            if matches!(
                e.as_service_error(),
                Some(CreateTableError::ResourceInUseException(_))
            ) =>
        {
            eprintln!("table {name} already exists")
        }
        Err(e) => return Err(aws_sdk_dynamodb::Error::from(e).into()),
    }
    Ok(())
}
