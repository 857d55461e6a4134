# One export rule per target and batch: a job converts every recording of its batch, reads
# each output back and compares it with its source (the batch's verify JSON), and declares
# each file it writes, so `snakemake results/nwb/<recording>.nwb` builds one file and
# Snakemake tracks each. Rules are named export_<target>__<batch>. Their input is the batch's
# list of sources (rule sources__<batch>, which declares every input file once) on local disk,
# or the pickles themselves on S3.


for batch in BATCHES:
    if from_sources_list(batch):  # on S3 the jobs declare the sources themselves

        rule:
            name:
                f"sources__{batch.key}"
            input:
                input_files(batch),
            output:
                sources_list(batch.key),
            log:
                f"logs/sources/{batch.key}.log",
            localrule: True
            conda:
                CONDA_ENV
            params:
                sources=[[r.name, r.path] for r in batch.recordings],
            script:
                "../scripts/sources.py"


for target in TARGETS:
    for batch in BATCHES:

        rule:
            name:
                f"export_{target.rule_name}__{batch.key}"
            input:
                sources=source_inputs(batch),
            output:
                # the JSON first: Snakemake finds a job's producer by matching the requested
                # file against the rule's outputs in order, compiling a regex per output
                json=target.verify_output(batch.key),
                files=export_outputs(target, batch),
            log:
                export_log(target.name, batch.key),
            benchmark:
                f"benchmarks/export/{target.name}/{batch.key}.tsv"
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
                sources_list=from_sources_list(batch),
                fs_Hz=fs_param(target, batch),
                sample_sheet=sample_sheet_param(target),
                pickle_loading=pickle_loading_param(),
                isolation=config["isolation"],
                on_bad_recording=config["on_bad_recording"],
                batch=batch.key,
            script:
                "../scripts/export.py"
