//! The subcommands behind `main`.

use anyhow::Context as _;
use migration::MigratorTrait;

use crate::config::{Command, Settings};
use crate::metrics::Metrics;
use crate::{AppState, Application};

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
            migration::Migrator::up(&db, None).await?;
            println!("migrations applied");
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
        Command::Sync => {
            anyhow::ensure!(
                settings.redis_url.is_some(),
                "`arena sync` needs REDIS_URL: the embedded cache lives inside `arena serve`, \
                 whose own sync worker copies it"
            );
            let state = AppState::connect(settings).await?;
            let (stop, rx) = tokio::sync::watch::channel(false);
            let worker = tokio::spawn(crate::usage::sync::sync_worker(state, rx));
            crate::app::shutdown_signal().await;
            let _ = stop.send(true);
            worker.await.context("the sync worker")?;
            Ok(())
        }
    }
}
