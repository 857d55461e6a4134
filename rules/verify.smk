# The verify JSON of every target and batch (written by its export job, which re-reads each
# output with the matching loader and compares it with its source) gives the summary table of
# every recording x target, then the check that fails the run if anything is not ok and lists what
# in results/ belongs to no current recording or target (list_stale and clean_stale, not part
# of a run, list and remove those).


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
        CHECK_LOG,
    localrule: True
    conda:
        CONDA_ENV
    params:
        declared=declared_outputs_param(),
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
