"""Driver entry point for spark-submit and the Spark operator: ``driver.py run CONFIG.yaml``.

spark-submit runs a Python file as a script, which puts the file's folder
first on ``sys.path``. Running ``thresher/cli.py`` that way would let
``thresher/selectors`` shadow the standard library's ``selectors`` module;
this file lives outside the package, so imports resolve normally.
"""

from thresher.cli import main

if __name__ == "__main__":
    main()
