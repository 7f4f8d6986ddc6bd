"""What follows a local run: the summary, the report and a query of the pushed model.

Beside ``run_summary.py`` (what the run did, from ML Metadata) and
``run_report.py`` (the Markdown report); this module only sequences them.
"""

from __future__ import annotations

from typing import Any, Dict

from pipeline import configs, run_report, run_summary


def finish_run(config: configs.RunConfig, query_served_model: bool = True) -> Dict[str, Any]:
    """Summarises the latest run, writes ``run_summary.json`` and the report.

    Args:
      config: the run's settings (its work dir holds ML Metadata and gets the outputs).
      query_served_model: when a model was pushed, serve it with the local gRPC
        server and ask it for one user's recommendations (``summary["grpc_query"]``).
    """
    summary = run_summary.summarize(config.metadata_path)
    if summary["pushed"] and query_served_model:
        from serving import demo

        summary["grpc_query"] = demo.recommend_over_grpc(
            config.model_name,
            config.push_base,
            config.data_dir,
            summary["examples_uri"],
            config.log_config,
        )
    run_summary.write_summary(summary, config.work_dir)
    run_report.write_report(summary, config.work_dir)
    return summary


def terminal_summary(
    summary: Dict[str, Any], config: configs.RunConfig, component_times: bool = True
) -> str:
    """What a person reads at the end of a run: metrics, blessing, push, next steps
    (and each component's time, unless ``component_times`` is False)."""
    lines = [run_summary.format_summary(summary, config.work_dir, component_times)]
    if summary.get("grpc_query"):
        from serving.demo import format_recommendations

        lines.append(format_recommendations(summary["grpc_query"]))
        lines.append(
            f"  serve it: .venv/bin/recsys-serve --model_name={config.model_name} "
            f"--model_base_path={config.push_base}"
        )
    return "\n".join(lines)
