//! The build graph: vertices (an operation plus the vertices whose results it reads),
//! merged when identical.
//!
//! The graph is generic over the operation type so that the scheduler and the merge rule
//! can be tested without real operations; kiln builds a `Graph<ops::Op>`.

use std::collections::HashMap;

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, Reversed};
use serde::Serialize;

/// Names one vertex of a [`Graph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct VertexId(u32);

impl VertexId {
    /// The vertex's position in insertion order, from 0.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One operation and the vertices whose results are its inputs, in order.
#[derive(Debug, Clone)]
pub struct Vertex<O> {
    /// What the vertex does.
    pub op: O,
    /// The vertices whose results this one reads, in the order the op expects them.
    pub inputs: Vec<VertexId>,
    /// Human text for progress, e.g. `[build 2/4] RUN make`. Not part of the identity:
    /// two vertices that differ only by label are merged and keep the first label.
    pub label: String,
}

/// A DAG of vertices; adding a vertex equal to an existing one (same op, same inputs)
/// returns the existing one.
#[derive(Debug, Clone)]
pub struct Graph<O> {
    dag: DiGraph<Vertex<O>, ()>,
    by_identity: HashMap<Vec<u8>, VertexId>,
}

impl<O: Serialize> Default for Graph<O> {
    fn default() -> Self {
        Graph {
            dag: DiGraph::new(),
            by_identity: HashMap::new(),
        }
    }
}

impl<O: Serialize> Graph<O> {
    /// An empty graph.
    pub fn new() -> Graph<O> {
        Graph::default()
    }

    /// Adds a vertex, or returns the identical one already present. Inputs must already
    /// be in the graph, so the graph is acyclic by construction.
    pub fn add(&mut self, op: O, inputs: Vec<VertexId>, label: impl Into<String>) -> VertexId {
        let identity = identity(&op, &inputs);
        if let Some(&existing) = self.by_identity.get(&identity) {
            return existing;
        }
        let node = self.dag.add_node(Vertex {
            op,
            inputs: inputs.clone(),
            label: label.into(),
        });
        for input in &inputs {
            self.dag.add_edge(NodeIndex::new(input.index()), node, ());
        }
        let id = VertexId(node.index() as u32);
        self.by_identity.insert(identity, id);
        id
    }

    /// The vertex with this id.
    pub fn vertex(&self, id: VertexId) -> &Vertex<O> {
        &self.dag[NodeIndex::new(id.index())]
    }

    /// How many vertices the graph has.
    pub fn len(&self) -> usize {
        self.dag.node_count()
    }

    /// True when the graph has no vertex.
    pub fn is_empty(&self) -> bool {
        self.dag.node_count() == 0
    }

    /// The vertices that read `id`'s result, each once.
    pub fn dependents(&self, id: VertexId) -> impl Iterator<Item = VertexId> + '_ {
        // petgraph yields a neighbour once per edge; a vertex that reads `id` twice (its
        // state and a `--from` source) has two edges but is one dependent.
        let mut seen = std::collections::BTreeSet::new();
        self.dag
            .neighbors_directed(NodeIndex::new(id.index()), Direction::Outgoing)
            .map(|n| VertexId(n.index() as u32))
            .filter(move |v| seen.insert(*v))
    }

    /// `targets` and every vertex they depend on, in insertion order (which is a
    /// topological order, since inputs are added before their readers).
    pub fn needed_for(&self, targets: &[VertexId]) -> Vec<VertexId> {
        let reversed = Reversed(&self.dag);
        let mut seen = vec![false; self.dag.node_count()];
        for target in targets {
            let mut dfs = Dfs::new(reversed, NodeIndex::new(target.index()));
            while let Some(node) = dfs.next(reversed) {
                seen[node.index()] = true;
            }
        }
        (0..seen.len())
            .filter(|&i| seen[i])
            .map(|i| VertexId(i as u32))
            .collect()
    }
}

fn identity<O: Serialize>(op: &O, inputs: &[VertexId]) -> Vec<u8> {
    // Ops are plain data; serialising them cannot fail. An empty identity would only
    // disable merging for that op, never merge two different ones, because the inputs
    // still follow.
    let mut bytes = serde_json::to_vec(op).unwrap_or_default();
    bytes.push(0);
    for input in inputs {
        bytes.extend_from_slice(&input.0.to_le_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_vertices_merge() {
        let mut g = Graph::new();
        let a = g.add("scratch", vec![], "a");
        let b = g.add("run x", vec![a], "b");
        let b2 = g.add("run x", vec![a], "b again");
        let c = g.add("run y", vec![a], "c");
        assert_eq!(b, b2);
        assert_ne!(b, c);
        assert_eq!(g.len(), 3);
        assert_eq!(g.vertex(b).label, "b");
    }

    #[test]
    fn needed_for_prunes_unreached_vertices() {
        let mut g = Graph::new();
        let base = g.add("base", vec![], "");
        let used = g.add("used", vec![base], "");
        let _unused = g.add("unused", vec![base], "");
        let target = g.add("final", vec![used], "");
        assert_eq!(g.needed_for(&[target]), vec![base, used, target]);
        let mut deps: Vec<_> = g.dependents(base).collect();
        deps.sort();
        assert_eq!(deps.len(), 2);
    }

    #[test]
    fn a_vertex_reading_one_input_twice_is_one_dependent() {
        // `FROM base` + `COPY --from=base`: the copy reads the base as its own state and as
        // its source, so the graph holds two edges between the same vertices.
        let mut g = Graph::new();
        let base = g.add("base", vec![], "");
        let copy = g.add("copy", vec![base, base], "");
        assert_eq!(g.dependents(base).collect::<Vec<_>>(), vec![copy]);
    }
}
