// A workflow (issue 14: dependencies, chains, groups): its jobs in layers by dependency depth, each with its status
// and what it waits for. Needs GET /api/v1/workflows/{id} (docs/ui-api-needs.md §8).

import { workflow } from "../api.js";
import { Badge, ErrorNote, JobLink, PageTitle, Progress } from "../components.jsx";
import { useData } from "../live.js";

function layers(nodes) {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const depth = new Map();
  const visit = (n, seen = new Set()) => {
    if (depth.has(n.id)) return depth.get(n.id);
    if (seen.has(n.id)) return 0;
    seen.add(n.id);
    const d = Math.max(-1, ...(n.depends_on || []).map((id) => (byId.has(id) ? visit(byId.get(id), seen) : -1))) + 1;
    depth.set(n.id, d);
    return d;
  };
  for (const n of nodes) visit(n);
  const out = [];
  for (const n of nodes) (out[depth.get(n.id)] ||= []).push(n);
  return out;
}

export function WorkflowPage({ id }) {
  const { data, error } = useData(() => workflow(id), id);
  return (
    <div>
      <PageTitle title={`Workflow ${id.slice(-8)}`} />
      <ErrorNote error={error} />
      {data ? (
        <>
          <p class="muted">{data.name || ""} {data.status ? <Badge status={data.status} /> : null}</p>
          <div class="workflow" role="list">
            {layers(data.jobs).map((layer, i) => (
              <section class="wf-layer" key={i} aria-label={`Step ${i + 1}`}>
                {layer.map((n) => (
                  <div class="card wf-node" role="listitem" key={n.id} data-node={n.id}>
                    <div><JobLink id={n.id} from={`#/workflows/${encodeURIComponent(id)}`} /> <Badge job={n} /></div>
                    <div class="task">{n.task}</div>
                    {n.progress ? <Progress progress={n.progress} /> : null}
                    {n.depends_on && n.depends_on.length ? <div class="muted small">after {n.depends_on.map((d) => `…${d.slice(-8)}`).join(", ")}</div> : null}
                  </div>
                ))}
              </section>
            ))}
          </div>
        </>
      ) : null}
    </div>
  );
}
