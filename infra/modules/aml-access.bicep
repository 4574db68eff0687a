// Access to the existing Azure ML workspace (deployed into the workspace's resource group):
// - the apps' identity as AzureML Data Scientist (submit and read jobs, register models, update the
//   online endpoint's deployment; it cannot create compute or change the workspace);
// - identity-based datastores on the loop's items and labeling-input containers, so the labeling
//   project reads the selector's input folder and training reads items by datastore URI.

param workspaceName string
param appPrincipalId string

@description('Loop storage account and containers the datastores point at.')
param storageAccountName string
param itemsContainer string
param labelingContainer string

@description('Datastore names; empty: do not create that datastore.')
param itemsDatastoreName string = ''
param labelingDatastoreName string = ''

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-04-01' existing = {
  name: workspaceName
}

var azureMLDataScientist = 'f6c7c914-8db3-469d-8ca1-694a8f32e121'

resource dataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: workspace
  name: guid(workspace.id, appPrincipalId, azureMLDataScientist)
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', azureMLDataScientist)
  }
}

resource itemsDatastore 'Microsoft.MachineLearningServices/workspaces/datastores@2024-04-01' = if (!empty(itemsDatastoreName)) {
  parent: workspace
  name: empty(itemsDatastoreName) ? 'unused-items' : itemsDatastoreName
  properties: {
    datastoreType: 'AzureBlob'
    accountName: storageAccountName
    containerName: itemsContainer
    endpoint: environment().suffixes.storage
    protocol: 'https'
    serviceDataAccessAuthIdentity: 'WorkspaceSystemAssignedIdentity'
    credentials: { credentialsType: 'None' }
    description: 'Active-learning loop: content-addressed items (scoring_collector)'
  }
}

resource labelingDatastore 'Microsoft.MachineLearningServices/workspaces/datastores@2024-04-01' = if (!empty(labelingDatastoreName)) {
  parent: workspace
  name: empty(labelingDatastoreName) ? 'unused-labeling' : labelingDatastoreName
  properties: {
    datastoreType: 'AzureBlob'
    accountName: storageAccountName
    containerName: labelingContainer
    endpoint: environment().suffixes.storage
    protocol: 'https'
    serviceDataAccessAuthIdentity: 'WorkspaceSystemAssignedIdentity'
    credentials: { credentialsType: 'None' }
    description: 'Active-learning loop: the labeling project\'s input folder (selector_timer)'
  }
}

output workspacePrincipalId string = workspace.identity.principalId
