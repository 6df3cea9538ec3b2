//! Runs a graph: every vertex whose inputs are ready runs at once, independent branches
//! in parallel; the first failure cancels the rest.
//!
//! The scheduler knows nothing of RUN or COPY: it is given a function that runs one
//! vertex from its inputs' results. Limits on concurrent sandboxes (`--jobs`) belong to
//! that function, so cheap vertices (cache hits, metadata) are never queued behind them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use serde::Serialize;
use tokio::task::JoinSet;

use crate::cancel::Cancel;
use crate::graph::{Graph, VertexId};

/// Why a scheduled run stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError<E> {
    /// A vertex failed; the others were cancelled.
    #[error("{error}")]
    Vertex {
        /// The vertex that failed first.
        vertex: VertexId,
        /// Its error.
        error: E,
    },
    /// The build was cancelled from outside (Ctrl-C) before it finished.
    #[error("the build was cancelled")]
    Cancelled,
    /// A vertex's task panicked; this is a bug in kiln.
    #[error("internal error: a build task panicked: {0}")]
    Panicked(String),
}

/// Runs `targets` and everything they need; returns each needed vertex's result.
///
/// `run_vertex(id, inputs)` gets the results of the vertex's inputs in input order. It
/// should watch `cancel` and return promptly once it fires.
pub async fn run<O, T, E, F, Fut>(
    graph: Arc<Graph<O>>,
    targets: &[VertexId],
    cancel: Cancel,
    run_vertex: F,
) -> Result<HashMap<VertexId, T>, ScheduleError<E>>
where
    O: Serialize + Send + Sync + 'static,
    T: Clone + Send + 'static,
    E: Send + 'static,
    F: Fn(VertexId, Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
{
    let needed = graph.needed_for(targets);
    let mut waiting: HashMap<VertexId, usize> = needed
        .iter()
        .map(|&id| (id, graph.vertex(id).inputs.len()))
        .collect();
    // An input listed twice counts twice; it is also released twice below.
    let run_vertex = Arc::new(run_vertex);
    let mut results: HashMap<VertexId, T> = HashMap::new();
    let mut tasks: JoinSet<(VertexId, Result<T, E>)> = JoinSet::new();
    let mut first_error: Option<ScheduleError<E>> = None;

    let spawn = |tasks: &mut JoinSet<_>, id: VertexId, results: &HashMap<VertexId, T>| {
        let inputs: Vec<T> = graph
            .vertex(id)
            .inputs
            .iter()
            .map(|input| results[input].clone())
            .collect();
        let run_vertex = Arc::clone(&run_vertex);
        tasks.spawn(async move { (id, run_vertex(id, inputs).await) });
    };

    for &id in &needed {
        if waiting[&id] == 0 {
            spawn(&mut tasks, id, &results);
        }
    }

    loop {
        let joined = tokio::select! {
            joined = tasks.join_next() => joined,
            _ = cancel.cancelled(), if first_error.is_none() => {
                first_error = Some(ScheduleError::Cancelled);
                continue;
            }
        };
        let Some(joined) = joined else { break };
        match joined {
            Ok((id, Ok(value))) => {
                results.insert(id, value);
                if first_error.is_some() {
                    continue;
                }
                // One edge per use: a vertex using this input twice is listed twice
                // here, and released once, by its number of uses.
                let mut dependents: Vec<VertexId> = graph.dependents(id).collect();
                dependents.sort_unstable_by_key(|d| d.index());
                dependents.dedup();
                for dependent in dependents {
                    let Some(count) = waiting.get_mut(&dependent) else {
                        continue;
                    };
                    let uses = graph
                        .vertex(dependent)
                        .inputs
                        .iter()
                        .filter(|&&i| i == id)
                        .count();
                    *count -= uses;
                    if *count == 0 {
                        spawn(&mut tasks, dependent, &results);
                    }
                }
            }
            Ok((vertex, Err(error))) => {
                // A vertex that fails after the build was cancelled reports the
                // cancellation, not its own error; otherwise the first failure wins.
                if first_error.is_none() {
                    first_error = Some(if cancel.is_cancelled() {
                        ScheduleError::Cancelled
                    } else {
                        ScheduleError::Vertex { vertex, error }
                    });
                }
                cancel.cancel();
            }
            Err(join_error) => {
                if first_error.is_none() {
                    first_error = Some(ScheduleError::Panicked(join_error.to_string()));
                }
                cancel.cancel();
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(results),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    fn diamond() -> (Arc<Graph<&'static str>>, [VertexId; 4]) {
        let mut g = Graph::new();
        let a = g.add("a", vec![], "a");
        let b = g.add("b", vec![a], "b");
        let c = g.add("c", vec![a], "c");
        let d = g.add("d", vec![b, c], "d");
        (Arc::new(g), [a, b, c, d])
    }

    #[tokio::test]
    async fn runs_in_dependency_order_and_passes_inputs() {
        let (g, [a, b, c, d]) = diamond();
        let graph = Arc::clone(&g);
        let results = run(g, &[d], Cancel::new(), move |id, inputs: Vec<String>| {
            let name = graph.vertex(id).op;
            async move { Ok::<_, String>(format!("{name}({})", inputs.join(","))) }
        })
        .await
        .expect("run");
        assert_eq!(results[&a], "a()");
        assert_eq!(results[&b], "b(a())");
        assert_eq!(results[&c], "c(a())");
        assert_eq!(results[&d], "d(b(a()),c(a()))");
    }

    #[tokio::test]
    async fn an_input_used_twice_releases_its_reader_once() {
        // `COPY --from=s` where stage s is the base image itself: [image, image].
        let mut g = Graph::new();
        let a = g.add("a", vec![], "a");
        let b = g.add("b", vec![a, a], "b");
        let g = Arc::new(g);
        let graph = Arc::clone(&g);
        let results = run(g, &[b], Cancel::new(), move |id, inputs: Vec<String>| {
            let name = graph.vertex(id).op;
            async move { Ok::<_, String>(format!("{name}({})", inputs.join(","))) }
        })
        .await
        .expect("run");
        assert_eq!(results[&b], "b(a(),a())");
    }

    #[tokio::test]
    async fn independent_vertices_overlap() {
        let (g, [_, _, _, d]) = diamond();
        let graph = Arc::clone(&g);
        let running = Arc::new(Mutex::new((0usize, 0usize)));
        run(g, &[d], Cancel::new(), move |id, _inputs: Vec<()>| {
            let running = Arc::clone(&running);
            let slow = matches!(graph.vertex(id).op, "b" | "c");
            async move {
                {
                    let mut r = running.lock().expect("lock");
                    r.0 += 1;
                    r.1 = r.1.max(r.0);
                }
                if slow {
                    // b and c wait for each other: this only finishes if they overlap.
                    for _ in 0..200 {
                        if running.lock().expect("lock").1 >= 2 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    assert!(
                        running.lock().expect("lock").1 >= 2,
                        "b and c never overlapped"
                    );
                }
                running.lock().expect("lock").0 -= 1;
                Ok::<_, String>(())
            }
        })
        .await
        .expect("run");
    }

    #[tokio::test]
    async fn first_failure_cancels_the_rest() {
        let (g, [_, _, _, d]) = diamond();
        let graph = Arc::clone(&g);
        let cancel = Cancel::new();
        let seen = cancel.clone();
        let started_d = Arc::new(Mutex::new(false));
        let flag = Arc::clone(&started_d);
        let err = run(g, &[d], cancel, move |id, _inputs: Vec<()>| {
            let name = graph.vertex(id).op;
            let seen = seen.clone();
            let flag = Arc::clone(&flag);
            async move {
                match name {
                    "b" => Err("b failed".to_owned()),
                    "c" => {
                        // Runs until cancelled, as a sandbox would.
                        seen.cancelled().await;
                        Err("c cancelled".to_owned())
                    }
                    "d" => {
                        *flag.lock().expect("lock") = true;
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
        })
        .await
        .expect_err("must fail");
        match err {
            ScheduleError::Vertex { error, .. } => assert_eq!(error, "b failed"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(!*started_d.lock().expect("lock"));
    }

    #[tokio::test]
    async fn outside_cancel_stops_the_run() {
        let (g, [_, _, _, d]) = diamond();
        let cancel = Cancel::new();
        let outside = cancel.clone();
        let inner = cancel.clone();
        let err = run(g, &[d], cancel, move |_id, _inputs: Vec<()>| {
            let outside = outside.clone();
            let inner = inner.clone();
            async move {
                outside.cancel();
                inner.cancelled().await;
                Err::<(), _>("stopped".to_owned())
            }
        })
        .await
        .expect_err("must stop");
        assert!(matches!(err, ScheduleError::Cancelled), "{err:?}");
    }
}
