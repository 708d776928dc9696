"""mrl indexes inside other frameworks: LangChain (``mrl.integrations.langchain``) and LlamaIndex
(``mrl.integrations.llama_index``). Each is an optional extra: ``pip install 'mrl[langchain]'`` or
``'mrl[llama-index]'``. Both sit over any mrl location (a folder, PostgreSQL, Qdrant) and search with the
two-pass index; vectors come from the index's own model.
"""
