//! Adding and dropping one column, the shape of every "a table gains a field" migration.

use sea_orm_migration::prelude::*;

/// `ALTER TABLE table ADD COLUMN column TEXT NOT NULL DEFAULT default`: existing rows get
/// `default`, which is how a migration says what they were before the column existed.
pub async fn add_text_column(
    manager: &SchemaManager<'_>,
    table: impl IntoIden,
    column: impl IntoIden,
    default: &str,
) -> Result<(), DbErr> {
    manager
        .alter_table(
            Table::alter()
                .table(table)
                .add_column(ColumnDef::new(column).string().not_null().default(default))
                .to_owned(),
        )
        .await
}

pub async fn drop_column(
    manager: &SchemaManager<'_>,
    table: impl IntoIden,
    column: impl IntoIden,
) -> Result<(), DbErr> {
    manager
        .alter_table(Table::alter().table(table).drop_column(column).to_owned())
        .await
}
