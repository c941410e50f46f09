//! `change_counter`: one row whose value every replica bumps after a management write and
//! polls, so caches on other replicas reload within the poll interval (SPEC §7).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ChangeCounter::Table)
                    .if_not_exists()
                    .col(integer(ChangeCounter::Id).primary_key())
                    .col(big_integer(ChangeCounter::Value).default(0))
                    .to_owned(),
            )
            .await?;
        let mut seed = Query::insert();
        seed.into_table(ChangeCounter::Table)
            .columns([ChangeCounter::Id, ChangeCounter::Value])
            .values([1.into(), 0i64.into()])
            .map_err(|e| DbErr::Custom(e.to_string()))?;
        manager.exec_stmt(seed).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ChangeCounter::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum ChangeCounter {
    Table,
    Id,
    Value,
}
