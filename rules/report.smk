# Figures and tables for `snakemake --report report.html`: one overview figure per recording
# (drawn in batches, like the exports: one job per batch, declaring each figure), the numbers
# of each batch, and one table of every recording joined with the verify summary. The logic is
# in spikelab.report; paths and report flags in common.smk.


report: "../report/workflow.rst"


for batch in BATCHES:

    rule:
        name:
            f"report_figures__{batch.key}"
        input:
            sources=source_inputs(batch),
        output:
            stats=report_stats(batch.key),  # first: see export.smk
            figures=report_figures(batch),
        log:
            f"logs/report/figures/{batch.key}.log",
        benchmark:
            f"benchmarks/report/figures/{batch.key}.tsv"
        group:
            "convert"  # SLURM: group-components in profiles/slurm
        conda:
            CONDA_ENV
        threads: 1
        resources:
            mem_mb=mem_mb_for(FIGURE_RESOURCES, batch),
            runtime=runtime_for(FIGURE_RESOURCES, batch),
        params:
            recordings=report_recordings_param(batch),
            sources_list=from_sources_list(batch),
            fs_Hz=config["fs_Hz"] if reads_fs(batch) else None,
            batch=batch.key,
            on_bad_recording=config["on_bad_recording"],
            pickle_loading=pickle_loading_param(),
            isolation=config["isolation"],
        script:
            "../scripts/report_figures.py"


rule report_table:
    input:
        stats=report_all_stats(),
        summary=rules.summary.output[0],
    output:
        tsv=report(
            REPORT_TABLE[0],
            caption="../report/table.rst",
            category="Summary",
            labels={"table": "recordings (TSV)"},
        ),
        html=report(
            REPORT_TABLE[1],
            caption="../report/table.rst",
            category="Summary",
            labels={"table": "recordings"},
        ),
    log:
        "logs/report/table.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/report_table.py"
