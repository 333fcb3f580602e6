//! The test matrix: [`scenario!`](crate::scenario) runs one scenario on a chosen set of
//! backends, one test case each.

/// Runs each scenario, an `async fn name(app: TestApp)` of the calling module, as one test
/// case per backend: a module `name` with one `#[tokio::test]` named after each backend
/// (`name::embedded`, `name::postgres_redis`, `name::postgres_redis_cluster`, so that
/// `cargo test redis_cluster` selects every case on the cluster). A case whose backends are
/// not found passes without running, and says so (`support` module).
///
/// ```ignore
/// crate::scenario! {
///     backends: [embedded, postgres_redis];           // one word a backend
///     settings: |s| s.sync_enabled = true;            // optional: for every scenario below
///     a_meal_is_created_and_read,                     // the scenarios
///     an_unexpired_combatant_is_not_fetched_again => |s| s.combatant_ttl_secs = 3600,
/// }
/// ```
///
/// - `backends: [...]`: `embedded`, `postgres_redis`, `postgres_redis_cluster`; one marked
///   `#[ignore = "why"]` is listed but runs only with `--ignored`. `backends: replicas` is
///   the set for scenarios of several replicas (`app.spawn_replica()`): PostgreSQL with
///   Redis, and with a Redis Cluster; the embedded case is ignored.
/// - `settings: |s| ...;`, then `name => |s| ...`: adjustments of the test settings, in
///   this order (`TestAppBuilder::settings`).
/// - `spawn: try_spawn_behind_proxy;`: how the app is started (a `TestAppBuilder`
///   method, `try_spawn` by default); the scenario takes what it returns, here
///   `(TestApp, Proxy)`.
///
/// A new backend is a `Backends` variant and one `@backend` line below.
#[macro_export]
macro_rules! scenario {
    (@backend embedded) => { $crate::support::Backends::Embedded };
    (@backend postgres_redis) => { $crate::support::Backends::Real };
    (@backend postgres_redis_cluster) => { $crate::support::Backends::RealCluster };

    (backends: replicas; $($rest:tt)*) => {
        $crate::scenario! {
            backends: [
                #[ignore = "embedded backends are one process: replicas share no cache and no events"]
                embedded,
                postgres_redis,
                postgres_redis_cluster,
            ];
            $($rest)*
        }
    };
    (backends: $backends:tt; $($rest:tt)*) => {
        $crate::scenario!(@settings $backends $($rest)*);
    };
    (@settings $backends:tt settings: $shared:expr; $($rest:tt)*) => {
        $crate::scenario!(@spawn $backends {$shared} $($rest)*);
    };
    (@settings $backends:tt $($rest:tt)*) => {
        $crate::scenario!(@spawn $backends {} $($rest)*);
    };
    (@spawn $backends:tt $shared:tt spawn: $spawn:ident; $($rest:tt)*) => {
        $crate::scenario!(@each $backends $shared {$spawn} $($rest)*);
    };
    (@spawn $backends:tt $shared:tt $($rest:tt)*) => {
        $crate::scenario!(@each $backends $shared {try_spawn} $($rest)*);
    };
    (@each $backends:tt $shared:tt $spawn:tt $($name:ident $(=> $tweak:expr)?),+ $(,)?) => {
        $($crate::scenario!(@cases $name $backends $shared {$($tweak)?} $spawn);)+
    };
    (
        @cases $name:ident [$($(#[ignore = $why:literal])? $backend:ident),+ $(,)?]
        $shared:tt $tweak:tt $spawn:tt
    ) => {
        mod $name {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                $(#[ignore = $why])?
                async fn $backend() {
                    $crate::scenario!(@run $name $backend $shared $tweak $spawn)
                }
            )+
        }
    };
    (
        @run $name:ident $backend:ident {$($shared:expr)?} {$($tweak:expr)?} {$spawn:ident}
    ) => {
        if let Some(app) = $crate::support::TestApp::builder($crate::scenario!(@backend $backend))
            $(.settings($shared))?
            $(.settings($tweak))?
            .$spawn()
            .await
        {
            $name(app).await
        }
    };
}
