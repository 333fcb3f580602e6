//! The subcommands behind `main`.

use anyhow::Context as _;

use crate::app::Application;
use crate::config::{Command, Settings};
use crate::metrics::Metrics;
use crate::state::AppState;

/// Runs one command to completion.
pub async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await
        }
        Command::Migrate => {
            let db =
                crate::backends::sql::connect(&settings.database_url, 2, &Metrics::new()).await?;
            let namespace = crate::backends::sql::migrate(&db).await?;
            println!("migrations applied; cache namespace {namespace}");
            Ok(())
        }
        Command::CacheReset => {
            let namespace = cache_reset(&settings).await?;
            println!(
                "cache namespace is now {namespace}: start Arena again; nothing cached before \
                 is read (the old entries expire on their own)"
            );
            Ok(())
        }
        Command::ExportSchema { out } => {
            let sdl = crate::graphql::sdl();
            match out {
                Some(path) => std::fs::write(&path, sdl)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{sdl}"),
            }
            Ok(())
        }
        Command::Seed => {
            let state = AppState::connect(settings).await?;
            let report = crate::seed::run(&state).await?;
            println!("{report}");
            Ok(())
        }
        Command::RegisterQueries { files } => {
            anyhow::ensure!(
                settings.redis_url.is_some(),
                "`arena register-queries` needs REDIS_URL: the embedded cache lives inside \
                 `arena serve`, so documents registered by a separate command would reach no \
                 server"
            );
            let state = AppState::connect(settings).await?;
            let persisted = crate::graphql::engine::persisted::PersistedQueries::new(
                state.kv.clone(),
                1,
                None,
                true,
            );
            for path in files {
                for document in crate::graphql::engine::persisted::documents_in(&path)? {
                    async_graphql::parser::parse_query(&document).with_context(|| {
                        format!("{}: a document does not parse", path.display())
                    })?;
                    let hash = persisted
                        .register_permanently(&document)
                        .await
                        .with_context(|| "registering in the cache tier")?;
                    println!("{}  {}", hex::encode(hash), path.display());
                }
            }
            Ok(())
        }
        Command::Sync => {
            anyhow::ensure!(
                settings.redis_url.is_some(),
                "`arena sync` needs REDIS_URL: the embedded cache lives inside `arena serve`, \
                 whose own sync worker copies it"
            );
            let state = AppState::connect(settings).await?;
            let workers = tokio_util::task::TaskTracker::new();
            let stop = tokio_util::sync::CancellationToken::new();
            workers.spawn(crate::metrics::background(crate::usage::sync::sync_worker(
                state,
                None,
                stop.clone(),
            )));
            crate::app::shutdown_signal().await;
            stop.cancel();
            workers.close();
            workers.wait().await;
            Ok(())
        }
    }
}

/// `arena cache-reset`: migrates, then gives the database a fresh cache namespace; returns it.
pub async fn cache_reset(settings: &Settings) -> anyhow::Result<String> {
    let db = crate::backends::sql::connect(&settings.database_url, 2, &Metrics::new()).await?;
    crate::backends::sql::migrate(&db).await?;
    let namespace = crate::backends::sql::reset_cache_namespace(&db)
        .await
        .context("writing the new cache namespace")?;
    db.close().await.ok();
    Ok(namespace)
}
