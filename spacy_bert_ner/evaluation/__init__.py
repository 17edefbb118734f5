"""Evaluation of any NER system on gold data, one job per module:

- `spacy_bert_ner.scorer`: the scores (exact-match P/R/F, overall and per type), the one F1;
- `error_kinds`: each error sorted into the kind that suggests a fix (type, boundary, missed...);
- `corpus`: reading gold Docs and running a pipeline over their words;
- `errors_page`: the displaCy HTML page of the sentences with errors;
- `analysis`: `analyze`, which runs them all and writes errors.json and the errors page.

The training report (`spacy_bert_ner.workflow.report`) draws the analysis' errors.json.
"""
