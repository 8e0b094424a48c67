"""Every machine-readable reason a task or an answer can be rejected with: the one place they are defined.

Validation.reason and CheckResult.reason are always one of these keys (or None when valid / correct).
"""

REASONS: dict[str, str] = {
    # Before anything runs: size caps and the AST gate.
    "no_inputs": "a task needs at least one input",
    "program_too_large": "the program text is longer than executor.max_program_chars",
    "input_too_large": "an input (or answer) text is longer than executor.max_input_chars",
    "syntax_error": "the program, input or answer does not parse as Python",
    "bad_input": "an input is not an argument list for f(...), or an answer is not a single expression",
    "bad_gold": "a gold output given to a check does not parse or evaluate (a caller bug, not the solver's)",
    "forbidden_import": "imports a module on the banned list (executor.banned_modules), or a relative import",
    "forbidden_call": "names a banned builtin (eval, exec, open, __import__, globals, ...) or calls type() with 3 args",
    "forbidden_attribute": "reaches for an escape route: dunder or frame attributes, private or module attributes "
    "of imported modules, strings naming them",
    "forbidden_name": "uses a dunder name such as __builtins__",
    # While running, inside the sandbox.
    "no_entry_function": "the program defines no callable named f",
    "timeout": "exceeded the wall-clock (executor.timeout_s) or CPU-time (executor.cpu_s) limit",
    "memory": "exceeded the address-space limit (executor.memory_mb)",
    "exception": "f (or the program's top level) raised an exception",
    "crash": "the sandboxed process died without a result (a signal such as SIGSEGV, or a forced exit)",
    "file_too_large": "wrote a file beyond the file-size limit",
    # About the result.
    "none_output": "f returned None (a task needs an output; executor.allow_none_output turns this off)",
    "uncomparable_output": "the output has no value equality that survives its repr (objects, functions, NaN, cycles)",
    "output_too_large": "the canonical repr of an output is longer than executor.max_output_chars",
    "nondeterministic": "two runs in fresh processes (different hash seeds) gave different results",
    # Checks of the solver's answers.
    "wrong_answer": "the answer ran but its value differs from the gold output",
    # The sandbox itself.
    "worker_crash": "the sandbox worker died twice on this item; the pool replaced it",
}
