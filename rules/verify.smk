# Re-read every output with the matching loader and compare it with its source: one verify
# rule per target and batch (a JSON result per batch), then the summary table of every
# recording x target, then the check that fails the run if anything is not ok and lists what
# in results/ belongs to no current recording or target (list_stale and clean_stale, not part
# of a run, list and remove those).


for target in TARGETS:
    for batch in BATCHES:

        rule:
            name:
                f"verify_{target.rule_name}__{batch.key}"
            input:
                outputs=exported_files(target, batch),
                sources=verify_source_inputs(batch),
            output:
                json=target.verify_output(batch.key),
            log:
                verify_log(target.name, batch.key),
            group:
                "convert"  # SLURM: group-components in profiles/slurm
            conda:
                CONDA_ENV
            threads: 1
            resources:
                mem_mb=mem_mb_for(target.spec.resources, batch),
                runtime=runtime_for(target.spec.resources, batch),
            params:
                target=target.as_params(),
                recordings=recordings_param(target, batch),
                fs_Hz=fs_param(target, batch),
                pickle_loading=pickle_loading_param(),
                isolation=config["isolation"],
                batch=batch.key,
                sources=local_sources(batch),
            script:
                "../scripts/verify.py"


rule summary:
    input:
        verify_results(SELECTED),
    output:
        SUMMARY,
    log:
        "logs/summary.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        fs_Hz=config["fs_Hz"],
        sheet_fs_Hz=sheet_fs_param(),
    script:
        "../scripts/summary.py"


rule check:
    input:
        rules.summary.output,
    output:
        VERIFIED,
    log:
        "logs/check.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        declared=declared_outputs_param(),
        # Snakemake prints the log of a failed job itself with show-failed-logs
        show_failed_logs=workflow.output_settings.show_failed_logs,
    script:
        "../scripts/check.py"


rule list_stale:
    log:
        "logs/list_stale.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        declared=declared_outputs_param(),
        clean=False,
    script:
        "../scripts/stale.py"


rule clean_stale:
    log:
        "logs/clean_stale.log",
    localrule: True
    conda:
        CONDA_ENV
    params:
        declared=declared_outputs_param(),
        clean=True,
    script:
        "../scripts/stale.py"
