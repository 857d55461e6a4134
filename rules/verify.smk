# Re-read every output with the matching loader and compare it with its source: one verify
# rule per target and batch (a JSON result per batch), then the summary table of every
# recording x target, then the check that fails the run if anything is not ok.


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
                f"logs/verify/{target.name}/{batch.key}.log",
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
        f"{RESULTS}/summary.tsv",
    log:
        "logs/summary.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/summary.py"


rule check:
    input:
        rules.summary.output,
    output:
        f"{RESULTS}/verified.ok",
    log:
        "logs/check.log",
    localrule: True
    conda:
        CONDA_ENV
    script:
        "../scripts/check.py"
